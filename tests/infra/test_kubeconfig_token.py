"""The kubeconfig's exec, run as kubectl and the Kubernetes provider run it: the real AWS CLI against
moto's STS and IAM (a moto server on 127.0.0.1), with other credentials in the environment.

The token is ``k8s-aws-v1.`` + a presigned STS GetCallerIdentity URL; EKS maps the principal whose
key signed it to an access entry. The test reads the key from the URL and asks moto whose it is.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from inferstack.infra.aws_identity import AwsIdentity
from inferstack.infra.cluster import kubeconfig
from tests.conftest import ROOT, unavailable

AMBIENT, PROFILE = "AKIAAMBIENT000000000", "AKIAPROFILE000000000"


@pytest.fixture(scope="module")
def sts_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def token_owner(url: str, identity: AwsIdentity | None, tmp: Path, **env: str) -> tuple[str, str]:
    """Run the kubeconfig's exec block: the key that signed its token, and whose moto says it is."""
    # The bootstrap installs the AWS CLI v1 in a venv of its own (its botocore pin is not boto3's).
    path = os.pathsep.join([str(ROOT / ".venv" / "opt" / "awscli" / "bin"), os.environ["PATH"]])
    if shutil.which("aws", path=path) is None:
        unavailable("the AWS CLI (bash .ci/bootstrap installs it): this test runs the kubeconfig's exec")
    (tmp / "credentials").write_text(
        f"[prod-admin]\naws_access_key_id = {PROFILE}\naws_secret_access_key = p\n"
    )
    (tmp / "config").write_text("[profile prod-admin]\nregion = us-east-1\n")
    exec_ = yaml.safe_load(kubeconfig("prod", "https://x.eks", "Y2E=", "us-east-1", identity))["users"][0][
        "user"
    ]["exec"]
    environment = {
        "PATH": path,
        "HOME": str(tmp),
        "AWS_CONFIG_FILE": str(tmp / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "credentials"),
        "AWS_ENDPOINT_URL_STS": url,  # the CLI's AssumeRole, and the host it presigns for
        "AWS_EC2_METADATA_DISABLED": "true",
        # Someone else's credentials in the shell that runs `pulumi up` or kubectl.
        "AWS_ACCESS_KEY_ID": AMBIENT,
        "AWS_SECRET_ACCESS_KEY": "a",
        **env,
    }
    done = subprocess.run(
        [exec_["command"], *exec_["args"]],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["apiVersion"] == exec_["apiVersion"]  # what the exec block asks for
    presigned = base64.urlsafe_b64decode(
        answer["status"]["token"].removeprefix("k8s-aws-v1.") + "=="
    ).decode()
    key = urllib.parse.parse_qs(urllib.parse.urlparse(presigned).query)["X-Amz-Credential"][0].split("/")[0]
    sts = boto3.client(
        "sts", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key="x"
    )
    return key, str(sts.get_caller_identity()["Arn"])


def test_the_token_is_the_stacks_role_whatever_the_shell_holds(sts_url: str, tmp_path: Path) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam = boto3.client(
        "iam",
        endpoint_url=sts_url,
        region_name="us-east-1",
        aws_access_key_id=AMBIENT,
        aws_secret_access_key="a",
    )
    role = iam.create_role(RoleName="deployer", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    key, owner = token_owner(sts_url, AwsIdentity(profile="prod-admin", role_arn=role), tmp_path)
    assert key not in (AMBIENT, PROFILE) and owner.startswith(
        "arn:aws:sts::123456789012:assumed-role/deployer/"
    )


def test_the_profile_wins_over_ambient_keys_only_as_an_argument(sts_url: str, tmp_path: Path) -> None:
    """Why --profile and not AWS_PROFILE: with keys in the environment the CLI ignores AWS_PROFILE."""
    assert token_owner(sts_url, AwsIdentity(profile="prod-admin"), tmp_path)[0] == PROFILE
    assert token_owner(sts_url, None, tmp_path, AWS_PROFILE="prod-admin")[0] == AMBIENT
