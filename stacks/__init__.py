"""The Pulumi program (``__main__.py``, run by `pulumi up` from ``Pulumi.yaml``'s ``main: stacks/``) and
what runs it offline: the mock-monitor runner behind `inferstack plan`, `policy check` and `cost`, and
the plan rendering."""
