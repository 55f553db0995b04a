"""`make deploy-check`: validate the deployment files offline (no cluster, no Docker engine).

1. docker-compose.yml against the compose-spec schema (vendored in check-jsonschema).
2. The Helm chart: `helm lint`, then `helm template` with each values file; every rendered
   object validated against the Kubernetes schemas of KUBE_VERSION (kubernetes-validate,
   strict: unknown fields are errors), KEDA's objects against KEDA's CRD schemas (from the
   cloudcoil-models-keda package, made strict the same way).
3. What the deployment relies on is there: the web HPA, the KEDA ScaledObject on the
   `inference` queue (and the TTFT trigger when enabled), PodDisruptionBudgets, the migration
   Job hook, liveness separate from readiness, a preStop drain inside the grace period, one
   GPU per inference pod, a single beat.

Run with the tools venv's Python (make deploy-check sets it up): python deploy/check.py HELM
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "deploy" / "chart" / "chatplatform"
KUBE_VERSION = "1.33.0"
RELEASE = "release"
# (values files, what must be in the rendering)
RENDERINGS: list[tuple[list[str], str]] = [
    ([], "defaults"),
    (["deploy/chart/ci-values.yaml"], "every option"),
    (["deploy/chart/vllm-values.yaml"], "vllm"),
]


class CheckFailed(Exception):
    pass


def check_compose() -> None:
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(REPO / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        raise CheckFailed(f"docker-compose.yml: {run.stdout}{run.stderr}")
    print("docker-compose.yml: valid against the compose-spec schema")


def render(helm: str, values: list[str]) -> list[dict[str, Any]]:
    args = [helm, "template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION]
    for path in values:
        args += ["-f", str(REPO / path)]
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        raise CheckFailed(f"helm template {values}: {run.stderr}")
    return [doc for doc in yaml.safe_load_all(run.stdout) if doc]


def strict(schema: Any) -> Any:
    """The schema with additionalProperties false wherever properties are listed (a CRD's
    structural schema prunes unknown fields; for a check, an unknown field is a typo)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def keda_schemas() -> dict[str, dict[str, Any]]:
    from cloudcoil.models.keda import v1alpha1

    schemas = {}
    for kind in ("ScaledObject", "TriggerAuthentication"):
        model = getattr(v1alpha1, kind)
        schemas[kind] = strict(model.model_json_schema(by_alias=True))
    return schemas


def validate(doc: dict[str, Any], keda: dict[str, dict[str, Any]]) -> None:
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        try:
            jsonschema.validate(doc, keda[doc["kind"]])
        except jsonschema.ValidationError as error:
            raise CheckFailed(f"{name}: {error.message} at {list(error.absolute_path)}") from None
        return
    try:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise CheckFailed(f"{name}: {error.message} at {list(error.path)}") from None


def by_kind(docs: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (doc for doc in docs if doc["kind"] == kind)


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    name = RELEASE + name_suffix
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    if len(found) != 1:
        raise CheckFailed(f"expected one {kind} named {name}, found {len(found)}")
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def check_web(docs: list[dict[str, Any]], hpa_expected: bool) -> None:
    web = one(docs, "Deployment", "-web")
    main = container(web)
    liveness, readiness = main["livenessProbe"], main["readinessProbe"]
    expect(liveness["httpGet"]["path"] == "/livez", "web liveness must be /livez")
    expect(readiness["httpGet"]["path"] == "/readyz", "web readiness must be /readyz")
    pre_stop = main["lifecycle"]["preStop"]["exec"]["command"]
    drain = float(main["args"][main["args"].index("--drain-timeout") + 1])
    grace = web["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    expect(pre_stop[0] == "sleep", "web preStop must wait for endpoint removal")
    expect(grace > float(pre_stop[1]) + drain, "web grace period must cover preStop + drain")
    expect("--proxy-headers" in main["args"], "web must read the proxy's headers")
    one(docs, "Service", "-web")
    one(docs, "PodDisruptionBudget", "-web")
    if hpa_expected:
        hpa = one(docs, "HorizontalPodAutoscaler", "-web")
        expect(hpa["spec"]["scaleTargetRef"]["name"] == web["metadata"]["name"], "HPA target")
    ingress = one(docs, "Ingress", "-web")
    annotations = ingress["metadata"].get("annotations", {})
    expect(
        int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "0")) >= 600,
        "the Ingress must keep idle websockets open longer than the server's idle timeout",
    )


def check_workers(docs: list[dict[str, Any]], vllm: bool) -> None:
    cpu = one(docs, "Deployment", "-worker-cpu")
    expect("livenessProbe" in container(cpu), "the CPU worker needs a liveness probe")
    one(docs, "PodDisruptionBudget", "-worker-cpu")
    beat = one(docs, "Deployment", "-beat")
    expect(beat["spec"]["replicas"] == 1, "beat runs exactly once")
    expect(beat["spec"]["strategy"]["type"] == "Recreate", "beat never runs twice in a rollout")
    target = "-inference-vllm" if vllm else "-inference"
    inference = one(docs, "Deployment", target)
    spec = inference["spec"]["template"]["spec"]
    expect(spec["terminationGracePeriodSeconds"] >= 90, "inference grace < answer timeout")
    if vllm:
        server = container(one(docs, "Deployment", "-vllm"))
        args = server["args"]
        expect("--enable-prefix-caching" in args and "fp8" in args, "vLLM flags")
        env = {e["name"]: e.get("value") for e in container(inference)["env"]}
        expect(env.get("INFERENCE_BACKEND") == "openai", "vLLM workers use the openai back end")
    else:
        limits = container(inference)["resources"]["limits"]
        expect(str(limits.get("nvidia.com/gpu")) == "1", "one GPU per inference pod")
        env = {e["name"]: e.get("value") for e in container(inference)["env"]}
        expect(env.get("INFERENCE_DEVICE") == "cuda", "inference must name its device")
    scaled = one(docs, "ScaledObject", target)
    expect(scaled["spec"]["scaleTargetRef"]["name"] == inference["metadata"]["name"], "KEDA target")
    redis = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]
    expect(len(redis) == 1 and redis[0]["metadata"].get("listName") == "inference", "queue trigger")
    one(docs, "PodDisruptionBudget", "-vllm" if vllm else "-inference")


def check_migrations(docs: list[dict[str, Any]]) -> None:
    jobs = list(by_kind(docs, "Job"))
    expect(len(jobs) == 1, "one migration Job")
    hooks = jobs[0]["metadata"]["annotations"]["helm.sh/hook"]
    expect("pre-upgrade" in hooks and "pre-install" in hooks, "migrations run before the pods")
    expect(container(jobs[0])["args"][-2:] == ["migrate", "--noinput"], "the Job migrates")


def check_chart(helm: str) -> None:
    lint = subprocess.run([helm, "lint", str(CHART), "--strict"], capture_output=True, text=True)
    if lint.returncode != 0:
        raise CheckFailed(f"helm lint: {lint.stdout}{lint.stderr}")
    keda = keda_schemas()
    for values, label in RENDERINGS:
        docs = render(helm, values)
        for doc in docs:
            validate(doc, keda)
        vllm = label == "vllm"
        check_web(docs, hpa_expected=label != "every option")
        check_workers(docs, vllm=vllm)
        check_migrations(docs)
        if label != "defaults":
            scaled = next(by_kind(docs, "ScaledObject"))
            types = [t["type"] for t in scaled["spec"]["triggers"]]
            expect("prometheus" in types, "the TTFT trigger is rendered when enabled")
        kinds = sorted({doc["kind"] for doc in docs})
        print(f"chart ({label}): {len(docs)} objects valid for Kubernetes {KUBE_VERSION}: {kinds}")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python deploy/check.py HELM", file=sys.stderr)
        return 2
    try:
        check_compose()
        check_chart(argv[0])
    except CheckFailed as error:
        print(f"deploy-check FAILED: {error}", file=sys.stderr)
        return 1
    print("deploy-check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
