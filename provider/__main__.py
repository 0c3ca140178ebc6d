"""The component provider: `pulumi package add` points at this folder (PulumiPlugin.yaml beside it)."""

from importlib import metadata

from pulumi.provider.experimental import component_provider_host

from inferstack.provider.components import InferencePlatform, TritonModelService

if __name__ == "__main__":
    component_provider_host(
        [InferencePlatform, TritonModelService], name="inferstack", version=metadata.version("inferstack")
    )
