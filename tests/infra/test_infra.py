"""infra/ checked offline (no cluster, no helm, no cloud): YAML lint, Kubernetes schemas, the Dask operator's
CRD schemas, the kustomize overlays, the Prefect work pool's job template and the Terraform IAM policies."""

import json
import os
import re
import shutil
import subprocess
import tomllib
from copy import deepcopy
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

import hcl2
import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from soilcube.config import Settings

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
OVERLAYS = ["dev", "prod"]
TERRAFORM = INFRA / "terraform"
IMAGE = "ghcr.io/soilcube/soilcube"
K8S_VERSION = kubernetes_validate.latest_version()
DASK_GROUP = "kubernetes.dask.org"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# -- helpers --------------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def key(obj: dict) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def containers(obj):
    """Every container and init container anywhere in an object, as kustomize finds them."""
    if isinstance(obj, dict):
        for name, value in obj.items():
            if name in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from containers(item)


def apply_json6902(obj: dict, ops: list[dict]) -> None:
    """The subset of RFC 6902 the overlays use: `replace` (the path must exist) and `add`."""
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert op["op"] in ("replace", "add"), f"unsupported patch op {op['op']}"
        if op["op"] == "replace":
            assert last in node, f"patch replaces {op['path']}, which {obj['metadata']['name']} does not have"
        node[last] = op["value"]


def render(directory: Path) -> list[dict]:
    """A tiny offline kustomize: resources (files or kustomization folders), JSON 6902 patches, image tags."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        assert path.exists(), f"{directory / 'kustomization.yaml'} lists {resource}, which does not exist"
        objects += render(path) if path.is_dir() else load_docs(path)
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matches = [
            o
            for o in objects
            if o["kind"] == target["kind"]
            and o["metadata"]["name"] == target["name"]
            and o["apiVersion"] == f"{target['group']}/{target['version']}"
        ]
        assert len(matches) == 1, f"patch target {target} matches {len(matches)} objects"
        ops = yaml.safe_load(patch["patch"])
        assert isinstance(ops, list), "overlays patch with JSON 6902 operations"
        apply_json6902(matches[0], ops)
    for image in kustomization.get("images", []):
        used = [c for c in containers(objects) if c["image"].rsplit(":", 1)[0] == image["name"]]
        assert used, f"kustomization pins image {image['name']}, which no container uses"
        for container in used:
            container["image"] = f"{image['name']}:{image['newTag']}"
    return objects


def by_kind(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def quantity(text: str) -> float:
    """Kubernetes quantities ('8Gi', '500m') and Dask sizes ('7GiB') in base units."""
    units = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"([0-9.]+)\s*([a-zA-Z]*?)B?", str(text)).groups()
    return float(number) * units[unit]


def strict(schema):
    """A CRD's structural schema as the API server applies it with strict field validation: unknown fields
    are errors wherever the schema lists properties and does not preserve unknown fields."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for name in ("items", "additionalProperties"):
        if isinstance(out.get(name), dict):
            out[name] = strict(out[name])
    for name in ("allOf", "anyOf", "oneOf"):
        if name in out:
            out[name] = [strict(sub) for sub in out[name]]
    return out


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) → validator of the spec, from the CRDs that ship inside dask-kubernetes (found, not
    imported: importing it is slow)."""
    package = Path(find_spec("dask_kubernetes").submodule_search_locations[0])
    crds = package / "operator" / "deployment" / "helm" / "dask-kubernetes-operator" / "crds"
    schemas = {}
    for path in sorted(crds.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for version in crd["spec"]["versions"]:
            if version["served"]:
                spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
                schema = strict(spec_schema)
                validator = jsonschema.validators.validator_for(schema)
                validator.check_schema(schema)
                api_version = f"{crd['spec']['group']}/{version['name']}"
                schemas[api_version, crd["spec"]["names"]["kind"]] = validator(schema)
    assert ("kubernetes.dask.org/v1", "DaskCluster") in schemas, f"no DaskCluster CRD in {crds}"
    return schemas


def validate_builtin(obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {error.message} at {list(error.path)}")


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(K8S / "base")


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(K8S / "overlays" / request.param)


# -- YAML -----------------------------------------------------------------------------------------------

YAMLLINT = YamlLintConfig("{extends: relaxed, rules: {line-length: {max: 120}}}")


@pytest.mark.parametrize("path", sorted(INFRA.rglob("*.yaml")), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_passes_yamllint(path):
    problems = list(linter.run(path.read_text(), YAMLLINT, str(path)))
    assert not problems, "\n".join(f"{path}:{p.line}:{p.column}: {p.message} ({p.rule})" for p in problems)


# -- Kubernetes objects ---------------------------------------------------------------------------------


def test_builtin_objects_pass_kubernetes_validate(base):
    builtin = [o for o in base if not o["apiVersion"].startswith(DASK_GROUP + "/")]
    assert {o["kind"] for o in builtin} == {"Namespace", "ServiceAccount", "ConfigMap"}
    for obj in builtin:
        validate_builtin(obj)


def test_dask_objects_validate_against_the_operator_crds(base, overlay, crd_validators):
    for _, objects in (("base", base), overlay):
        dask = [o for o in objects if o["apiVersion"].startswith(DASK_GROUP + "/")]
        assert {o["kind"] for o in dask} == {"DaskCluster", "DaskAutoscaler"}
        for obj in dask:
            validator = crd_validators[obj["apiVersion"], obj["kind"]]
            assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
            validator.validate(obj["spec"])
            bad = deepcopy(obj["spec"])
            bad["unknownField"] = 1
            with pytest.raises(jsonschema.ValidationError):  # the strict schema does catch typos
                validator.validate(bad)


def test_dask_pod_and_service_specs_pass_kubernetes_validate(base):
    """The CRD embeds the PodSpec of Kubernetes 1.21; the pod specs are checked against a recent one too."""
    cluster = by_kind(base, "DaskCluster")
    for role in ("scheduler", "worker"):
        spec = cluster["spec"][role]["spec"]
        validate_builtin({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": role}, "spec": spec})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "scheduler"}}
    validate_builtin({**service, "spec": cluster["spec"]["scheduler"]["service"]})


def test_dask_cluster_hangs_together(base):
    namespace = by_kind(base, "Namespace")["metadata"]["name"]
    for obj in base:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]
    cluster, config = by_kind(base, "DaskCluster"), by_kind(base, "ConfigMap")
    assert by_kind(base, "DaskAutoscaler")["spec"]["cluster"] == cluster["metadata"]["name"]

    # Flows reach the scheduler through the Service the operator names <cluster>-scheduler.
    ports = {p["name"]: p["port"] for p in cluster["spec"]["scheduler"]["service"]["ports"]}
    service = f"{cluster['metadata']['name']}-scheduler.{namespace}.svc.cluster.local"
    address = f"tcp://{service}:{ports['tcp-comm']}"
    assert config["data"]["SOILCUBE_SCHEDULER_ADDRESS"] == address

    worker_pod = cluster["spec"]["worker"]["spec"]
    assert worker_pod["serviceAccountName"] == by_kind(base, "ServiceAccount")["metadata"]["name"]
    (worker,) = worker_pod["containers"]
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in worker["envFrom"]
    for ref in worker["envFrom"]:
        assert "secretRef" not in ref or ref["secretRef"]["optional"], "no Secret is part of infra/k8s"

    # One Dask thread per requested core; Dask's memory limit below the container's, so that Dask spills and
    # pauses before the kernel kills the pod.
    args = worker["args"]
    option = {name: args[i + 1] for i, name in enumerate(args) if name.startswith("--") and i + 1 < len(args)}
    resources = worker["resources"]
    assert int(option["--nthreads"]) == quantity(resources["requests"]["cpu"])
    assert quantity(option["--memory-limit"]) <= quantity(resources["limits"]["memory"])
    assert resources["requests"]["memory"] == resources["limits"]["memory"]


def test_configmap_holds_soilcube_settings(base, monkeypatch):
    data = by_kind(base, "ConfigMap")["data"]
    fields = {f"SOILCUBE_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in data if k.startswith("SOILCUBE_")} <= fields
    for name in list(os.environ):
        if name.startswith("SOILCUBE_"):
            monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.archive.startswith("s3://") and settings.store.startswith("s3://")
    assert settings.scheduler_address == data["SOILCUBE_SCHEDULER_ADDRESS"]


def test_soilcube_containers_override_the_image_entrypoint(base):
    """The Dockerfile's ENTRYPOINT is `soilcube`: a container that only set args would run `soilcube ARGS`."""
    dockerfile = (REPO / "Dockerfile").read_text()
    has_entrypoint = any(line.startswith("ENTRYPOINT") for line in dockerfile.splitlines())
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    ours = [c for c in containers(base) if c["image"].startswith(IMAGE + ":")]
    assert len(ours) == 2
    for container in ours:
        if has_entrypoint:
            assert container.get("command"), f"container {container['name']} must set command"
        assert container["command"][0] == "dask" and "dask" in scripts


# -- kustomize ------------------------------------------------------------------------------------------


def test_overlays_render_with_the_pinned_image(base, overlay):
    name, objects = overlay
    assert {key(o) for o in objects} == {key(o) for o in base}
    images = {c["image"] for c in containers(objects)}
    assert images == {f"{IMAGE}:{VERSION}"}, "the image tag is pinned to the package version"
    cluster, scaler = by_kind(objects, "DaskCluster"), by_kind(objects, "DaskAutoscaler")
    assert 0 <= scaler["spec"]["minimum"] <= scaler["spec"]["maximum"]
    assert cluster["spec"]["worker"]["replicas"] >= 1
    assert cluster["spec"]["worker"]["replicas"] <= scaler["spec"]["maximum"]


def test_overlays_differ_in_replica_counts():
    dev, prod = (render(K8S / "overlays" / name) for name in OVERLAYS)
    maximum = [by_kind(objects, "DaskAutoscaler")["spec"]["maximum"] for objects in (dev, prod)]
    replicas = [by_kind(objects, "DaskCluster")["spec"]["worker"]["replicas"] for objects in (dev, prod)]
    assert maximum[0] < maximum[1] and replicas[0] <= replicas[1]


@pytest.mark.parametrize("name", OVERLAYS)
def test_kubectl_kustomize_renders_what_the_tiny_renderer_renders(name):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the CI machine has it)")
    directory = K8S / "overlays" / name
    result = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    assert sorted(rendered, key=key) == sorted(render(directory), key=key)


# -- Prefect worker -------------------------------------------------------------------------------------


def prefect_values() -> dict:
    return yaml.safe_load((INFRA / "prefect" / "values.yaml").read_text())


def render_prefect_job(template: dict) -> dict:
    """The job manifest as the Kubernetes worker builds it from the variables' defaults: whole-string
    placeholders take the value, others are substituted as text, env becomes a list, args are shlex-split."""
    defaults = {name: spec.get("default") for name, spec in template["variables"]["properties"].items()}
    defaults["command"] = "prefect flow-run execute"

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str):
            whole = re.fullmatch(r"\{\{\s*(\w+)\s*\}\}", node)
            if whole:
                return defaults[whole[1]]
            return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: str(defaults[m[1]]), node)
        return node

    job = fill(template["job_configuration"]["job_manifest"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in (container.get("env") or {}).items()]
    container["args"] = container["args"].split()
    job["metadata"]["name"] = job["metadata"].pop("generateName") + "abcde"
    return job


def test_prefect_worker_serves_a_kubernetes_work_pool():
    worker = prefect_values()["worker"]
    assert worker["config"]["type"] == "kubernetes" and worker["config"]["workPool"]
    assert worker["image"]["prefectTag"].startswith("3.8.8-"), "the Prefect of the flows extra"
    assert worker["apiConfig"] in ("cloud", "selfHostedCloud", "server")


def test_prefect_job_template_is_valid_and_runs_soilcube(base):
    template = json.loads(prefect_values()["worker"]["config"]["baseJobTemplate"]["configuration"])
    assert set(template) == {"variables", "job_configuration"}
    jsonschema.validators.validator_for(template["variables"]).check_schema(template["variables"])
    jsonschema.validate({}, template["variables"])  # every variable has a default or is optional

    # Prefect refuses a template whose placeholders are not declared variables.
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"])

    job = render_prefect_job(template)
    pod = job["spec"]["template"]["spec"]
    # Prefect's worker insists on these two (Job fields) inside the pod spec; the API server drops them.
    assert (pod.pop("parallelism"), pod.pop("completions"), pod["restartPolicy"]) == (1, 1, "Never")
    (container,) = pod["containers"]
    assert container["name"] == "prefect-job" and "labels" in job["metadata"]
    validate_builtin(job)

    assert container["image"] == f"{IMAGE}:{VERSION}"
    assert container["command"] == ["/usr/bin/env"]  # the image's ENTRYPOINT would swallow the args
    assert job["metadata"]["namespace"] == by_kind(base, "Namespace")["metadata"]["name"]
    assert pod["serviceAccountName"] == by_kind(base, "ServiceAccount")["metadata"]["name"]
    assert {"configMapRef": {"name": by_kind(base, "ConfigMap")["metadata"]["name"]}} in container["envFrom"]


def test_prefect_deployments_use_the_work_pool():
    pool = prefect_values()["worker"]["config"]["workPool"]
    deployments = yaml.safe_load((REPO / "flows" / "prefect.yaml").read_text())["deployments"]
    assert {d["name"] for d in deployments} == {"nrt", "backfill", "model", "refs", "gc"}
    for deployment in deployments:
        assert deployment["work_pool"]["name"] == pool, deployment["name"]


# -- Terraform ------------------------------------------------------------------------------------------


def unquote(value):
    """python-hcl2 keeps the quotes of string literals; expressions come as '${…}'."""
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@pytest.fixture(scope="module")
def terraform() -> dict:
    """{'variable': {name: body}, 'resource': {(type, name): body}, 'data': …, 'output': …}, one namespace."""
    files = sorted(TERRAFORM.glob("*.tf"))
    assert {f.name for f in files} == {"versions.tf", "variables.tf", "main.tf", "outputs.tf"}
    merged = {"variable": {}, "resource": {}, "data": {}, "output": {}}
    for path in files:
        with path.open() as handle:
            parsed = unquote(hcl2.load(handle))
        for kind in ("variable", "output"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for type_, named in block.items():
                    for name, body in named.items():
                        merged[kind][type_, name] = body
    return merged


def resolve(text: str, tf: dict) -> str:
    """Substitute variable defaults and bucket names/ARNs into an HCL string."""
    resources = tf["resource"].items()
    buckets = {name: body["bucket"] for (type_, name), body in resources if type_ == "aws_s3_bucket"}

    def one(match):
        ref = match[1]
        if ref.startswith("var."):
            return str(tf["variable"][ref[4:]]["default"])
        type_, name, attribute = ref.split(".")
        assert type_ == "aws_s3_bucket" and attribute in ("arn", "bucket"), ref
        bucket = resolve(buckets[name], tf)
        return f"arn:aws:s3:::{bucket}" if attribute == "arn" else bucket

    return re.sub(r"\$\{([\w.]+)\}", one, text)


def grants(tf: dict, role: str) -> set[tuple[str, str]]:
    """(action, resource ARN) pairs that a role's inline policies allow; the role has no other grant."""
    attached = [body for body in tf["resource"].values() if "role" in body]  # policies, attachments, …
    mine = [body for body in attached if body["role"] == f"${{aws_iam_role.{role}.id}}"]
    assert len(mine) == 1 and "policy" in mine[0], f"role {role} should have exactly one inline policy"
    source = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", mine[0]["policy"])[1]
    pairs = set()
    for statement in tf["data"]["aws_iam_policy_document", source]["statement"]:
        assert statement.get("effect", "Allow") == "Allow"
        assert not {"not_actions", "not_resources", "principals"} & set(statement)
        for action in statement["actions"]:
            assert "*" not in action, f"{role} policy uses the wildcard action {action}"
            pairs |= {(action, resolve(resource, tf)) for resource in statement["resources"]}
    return pairs


def test_terraform_parses_and_declares_only_what_soilcube_needs(terraform):
    types = sorted(type_ for type_, _ in terraform["resource"])
    assert types == sorted(2 * ["aws_s3_bucket", "aws_iam_role", "aws_iam_role_policy"])
    for name, body in terraform["variable"].items():
        assert body.get("description") and body.get("type"), f"variable {name} needs a description and a type"
    assert {"writer_role_arn", "analyst_role_arn", "archive_url", "store_url"} <= set(terraform["output"])


def test_terraform_is_formatted():
    for path in TERRAFORM.glob("*.tf"):
        text = path.read_text()
        assert "\t" not in text and text.endswith("\n") and not re.search(r"[ \t]+\n", text), path
    binary = shutil.which("terraform")
    if binary is None:
        pytest.skip("terraform is not installed: only whitespace was checked")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull}
    command = [binary, "fmt", "-check", "-diff", "-recursive", TERRAFORM]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_analyst_role_only_reads_the_cubes(terraform):
    cubes = f"arn:aws:s3:::{terraform['variable']['cube_bucket']['default']}"
    assert grants(terraform, "analyst") == {("s3:ListBucket", cubes), ("s3:GetObject", f"{cubes}/*")}


def test_writer_role_writes_cubes_and_references_but_not_granules(terraform):
    archive = f"arn:aws:s3:::{terraform['variable']['archive_bucket']['default']}"
    cubes = f"arn:aws:s3:::{terraform['variable']['cube_bucket']['default']}"
    pairs = grants(terraform, "writer")
    assert {
        ("s3:ListBucket", archive),
        ("s3:GetObject", f"{archive}/*"),
        ("s3:ListBucket", cubes),
        ("s3:GetObject", f"{cubes}/*"),
        ("s3:PutObject", f"{cubes}/*"),
        ("s3:DeleteObject", f"{cubes}/*"),
        ("s3:PutObject", f"{archive}/refs/*"),  # soilcube.refs keeps the references next to the archive
    } <= pairs
    for action, resource in pairs:
        if action not in ("s3:GetObject", "s3:ListBucket"):
            assert resource in (f"{cubes}/*", f"{archive}/refs/*"), f"writer may {action} on {resource}"


def test_terraform_matches_the_kubernetes_side(terraform, base):
    data = by_kind(base, "ConfigMap")["data"]
    variables = {name: body.get("default") for name, body in terraform["variable"].items()}
    assert data["SOILCUBE_ARCHIVE"] == f"s3://{variables['archive_bucket']}"
    assert data["SOILCUBE_STORE"] == f"s3://{variables['cube_bucket']}"
    assert data["AWS_DEFAULT_REGION"] == variables["aws_region"]

    account = by_kind(base, "ServiceAccount")
    assert (variables["namespace"], variables["service_account"]) == (
        account["metadata"]["namespace"],
        account["metadata"]["name"],
    )
    role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role_arn.endswith(":role/" + terraform["resource"]["aws_iam_role", "writer"]["name"])
    (trust,) = terraform["data"]["aws_iam_policy_document", "writer_trust"]["statement"]
    subjects = [c for c in trust["condition"] if c["variable"].endswith(":sub")]
    assert [resolve(v, terraform) for v in subjects[0]["values"]] == [
        f"system:serviceaccount:{variables['namespace']}:{variables['service_account']}"
    ]
