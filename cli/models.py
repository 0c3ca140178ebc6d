"""`inferstack models`: package TorchScript as Triton models, publish repositories to S3, verify them."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import typer

from inferstack.cli.options import EndpointUrl, existing_file
from inferstack.cli.output import error
from inferstack.infra.errors import InvalidInput

app = typer.Typer(no_args_is_help=True, help="build and publish Triton model repositories")


@app.command()
def build(
    torchscript: Annotated[Path, typer.Option(help="the TorchScript file (torch.jit.save) to package")],
    name: Annotated[str, typer.Option(help="the model's name in the repository")],
    input_specs: Annotated[
        list[str],
        typer.Option(
            "--input", metavar="NAME:DTYPE:DIMS", help="an input tensor, e.g. features:FP32:6 (repeatable)"
        ),
    ],
    output_specs: Annotated[
        list[str],
        typer.Option(
            "--output", metavar="NAME:DTYPE:DIMS", help="an output tensor, e.g. score:FP32:1 (repeatable)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="the repository folder to write into")],
    max_batch_size: Annotated[int, typer.Option(help="largest batch Triton forms (0: no batch axis)")] = 8,
    target: Annotated[
        Literal["python", "pytorch_libtorch"],
        typer.Option(help="the Triton backend: python (runs anywhere) or pytorch_libtorch"),
    ] = "python",
    instance_kind: Annotated[
        Literal["KIND_CPU", "KIND_GPU"], typer.Option(help="where each model instance runs")
    ] = "KIND_CPU",
    preferred_batch_size: Annotated[
        list[int] | None, typer.Option(help="a batch size the dynamic batcher aims for (repeatable)")
    ] = None,
    max_queue_delay_us: Annotated[
        int | None, typer.Option(help="how long the dynamic batcher waits to fill a batch (default: 100)")
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(
            help="model instances, each running its own forward (default: for KIND_CPU and target "
            "python one per core of this machine, up to 4; else 1)"
        ),
    ] = None,
    torch_threads: Annotated[
        int | None,
        typer.Option(
            help="torch intra-op threads per instance (default: python target, half the cores "
            "per instance, at least one; libtorch, all cores)"
        ),
    ] = None,
    version: Annotated[int, typer.Option(help="the version folder to write (1 or more)")] = 1,
    version_policy: Annotated[
        str,
        typer.Option(
            metavar="latest:N|specific:V,V|all",
            help="which versions Triton serves (several: a stable and a canary)",
        ),
    ] = "latest:1",
    precision: Annotated[
        Literal["fp32", "fp16", "bf16", "int8-dynamic"],
        typer.Option(
            help="reduce at packaging, refused unless within the tolerance of the FP32 answers "
            "(int8-dynamic: CPU instances only)"
        ),
    ] = "fp32",
    calibration: Annotated[
        Path | None, typer.Option(metavar="FILE.npz", help="inputs to compare on (default: generated)")
    ] = None,
    max_abs_error: Annotated[float | None, typer.Option(help="tolerance: largest |reduced - fp32|")] = None,
    max_rel_error: Annotated[
        float | None, typer.Option(help="tolerance: largest |reduced - fp32| / largest |fp32| per output")
    ] = None,
    min_top1_agreement: Annotated[
        float | None, typer.Option(help="tolerance for classifiers: share of rows with one argmax")
    ] = None,
) -> int:
    """Package a TorchScript file as a Triton model."""
    from inferstack.serving.models.build import build_from_signature
    from inferstack.serving.models.config import parse_config
    from inferstack.serving.models.precision import (
        REPORT_FILE,
        PrecisionOptions,
        Tolerance,
        ToleranceExceeded,
        load_calibration,
    )
    from inferstack.serving.models.specs import (
        DynamicBatching,
        ModelOptions,
        parse_tensor_spec,
        parse_version_policy,
    )

    existing_file(torchscript, "--torchscript", "TorchScript file")
    inputs = [parse_tensor_spec(text, field=f"--input[{i}]") for i, text in enumerate(input_specs)]
    outputs = [parse_tensor_spec(text, field=f"--output[{i}]") for i, text in enumerate(output_specs)]
    batching = DynamicBatching(preferred_batch_sizes=tuple(preferred_batch_size or ()))
    if max_queue_delay_us is not None:
        batching = replace(batching, max_queue_delay_us=max_queue_delay_us)
    if max_batch_size == 0 and (preferred_batch_size or max_queue_delay_us is not None):
        raise InvalidInput("--max-batch-size", 0, "> 0 with dynamic batching flags (0: no batch axis)")
    options = ModelOptions(
        max_batch_size=max_batch_size,
        instance_kind=instance_kind,
        instance_count=instances,
        dynamic_batching=batching if max_batch_size > 0 else None,
        torch_threads=torch_threads,
        version_policy=parse_version_policy(version_policy, field="--version-policy"),
    )
    reduction = PrecisionOptions(
        precision,
        Tolerance(max_abs_error, max_rel_error, min_top1_agreement),
        None if calibration is None else load_calibration(calibration),
    )
    try:
        built = build_from_signature(
            torchscript,
            name=name,
            inputs=inputs,
            outputs=outputs,
            repository=out,
            target=target,
            options=options,
            version=version,
            precision=reduction,
        )
    except ToleranceExceeded as refused:
        print("\n".join(refused.report.lines()), file=sys.stderr)
        error(str(refused))
        return 1
    print(f"built {built.name} version {built.version} ({built.target}) in {built.path}")
    if instances is None:
        groups = parse_config(built.config_text, folder=built.name).instance_group
        print(f"instances: {groups[0].count} ({instance_kind}, chosen for this machine; --instances sets it)")
    if built.report is not None:
        print("\n".join(built.report.lines()))
        print(f"report written to {built.path / str(built.version) / REPORT_FILE}")
    return 0


@app.command()
def publish(
    repository: Annotated[Path, typer.Argument(help="the model repository folder")],
    destination: Annotated[str, typer.Argument(metavar="s3://BUCKET/PREFIX", help="where it goes")],
    endpoint_url: EndpointUrl = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="replace files of published versions, or their model's config without a new version",
        ),
    ] = False,
    served_only: Annotated[
        bool,
        typer.Option(
            "--served-only",
            help="upload only the versions each model's version_policy serves (Triton copies every "
            "version in the prefix into the pod's cache)",
        ),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="after the manifests, delete what they do not list from each model's folder "
            "(with --served-only: every version outside the policy)",
        ),
    ] = False,
) -> int:
    """Upload a model repository to S3."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    from inferstack.serving.models.publish import parse_s3_uri, publish_repository

    location = parse_s3_uri(destination)
    s3 = _s3_client(endpoint_url)
    print(f"publishing {repository} to {location.uri} ({endpoint_url or 'AWS S3'})", flush=True)
    try:
        report = publish_repository(
            repository,
            location,
            s3=s3,
            progress=lambda line: print(line, flush=True),
            overwrite=overwrite,
            served_only=served_only,
            prune=prune,
        )
    # RuntimeError: an object read back with a sha256 other than the file's.
    except (Boto3Error, BotoCoreError, ClientError, RuntimeError) as failure:
        return _s3_failed(f"publishing to {location.uri}", failure)
    print(
        f"{report.location.uri}: {len(report.uploaded)} uploaded, {len(report.skipped)} unchanged"
        + (f", {len(report.pruned)} pruned" if prune else "")
    )
    return 0


@app.command()
def verify(
    uri: Annotated[str, typer.Argument(metavar="s3://BUCKET/PREFIX", help="a published repository")],
    endpoint_url: EndpointUrl = None,
) -> int:
    """Check every published object's sha256 against its model's manifest."""
    from botocore.exceptions import BotoCoreError, ClientError

    from inferstack.serving.models.publish import parse_s3_uri, verify_published

    location = parse_s3_uri(uri, field="location")
    s3 = _s3_client(endpoint_url)
    print(f"verifying {location.uri} against its manifests ({endpoint_url or 'AWS S3'})", flush=True)
    try:
        problems = verify_published(location, s3=s3)
    except (BotoCoreError, ClientError, ValueError) as failure:
        return _s3_failed(f"verifying {location.uri}", failure)
    for problem in problems:
        print(f"  {problem}")
    print(f"{location.uri}: " + (f"{len(problems)} problem(s)" if problems else "every object matches"))
    return 1 if problems else 0


def _s3_client(endpoint_url: str | None) -> Any:
    """An S3 client whose every call gives up within seconds: a hung endpoint is reported, not waited on."""
    import boto3
    from botocore.config import Config

    if endpoint_url is not None:
        url = urlsplit(endpoint_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise InvalidInput("--endpoint-url", endpoint_url, "an http(s)://HOST[:PORT] URL")
    config = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _s3_failed(what: str, failure: Exception) -> int:
    error(f"{what} failed: {failure}")
    for note in getattr(failure, "__notes__", []):
        error(note)
    return 1
