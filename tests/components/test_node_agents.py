"""The node agents table against what the pinned charts really render with the stack's values."""

from __future__ import annotations

from pathlib import Path

from inferstack.components.node_agents import NODE_AGENTS
from inferstack.infra.node_template import may_land, pod_requests
from inferstack.policies.scale_from_zero import group_node
from inferstack.stacks import offline
from tests.components.test_helm_render import RELEASE, render_all
from tests.conftest import ROOT
from tests.harness import DEPLOYER
from tests.policies.test_scale_from_zero import as_stack


def test_every_chart_daemon_set_on_a_gpu_node_is_in_the_table_with_its_requests(vendor_dir: Path) -> None:
    recording = offline.run_stack(ROOT / "stacks", "prod", DEPLOYER)
    stack = as_stack(recording.resources)
    node = group_node(stack, stack.gpu_groups()[0][0], managed=True)
    assert node is not None
    rendered = render_all(recording, vendor_dir)
    agents = {a.name: a for a in NODE_AGENTS if a.source == "chart"}
    seen = set()
    for release in recording.of_type(RELEASE):
        for manifest in rendered.objects[release.urn]:
            if manifest["kind"] != "DaemonSet":
                continue
            name, spec = manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]
            if not may_land(spec, node):
                assert name not in agents, f"{name} is in the table but does not run on GPU nodes"
                continue
            assert name in agents, f"{release.inputs['chart']} runs DaemonSet {name} on GPU nodes: add it"
            agent = agents[name]
            assert agent.installed_by == release.inputs["chart"]
            assert may_land(agent.pod, node)
            counted, real = pod_requests(agent.pod), pod_requests(spec)
            assert all(counted.get(r, 0.0) >= v for r, v in real.items()), (name, counted, real)
            seen.add(name)
    assert seen == set(agents)
