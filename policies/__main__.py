"""`pulumi preview --policy-pack policies` runs this folder; `python -m inferstack.policies` does the same."""

from inferstack.policies.pack import serve

serve()
