"""inferstack as a Pulumi component provider: `InferencePlatform` and `TritonModelService` for every
Pulumi language (`pulumi package add`), with a schema generated from the Python API's typed args."""
