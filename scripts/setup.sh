#!/usr/bin/env bash
# Prepare this machine for sipbridge: the Debian packages that the tests and
# the demo use (SIPp, sipsak, baresip, linphone, Kamailio, PostgreSQL,
# python3-venv) and the project's
# virtualenv in .venv with sipbridge installed in editable mode.
#
# Idempotent: apt is not touched when every package is present, and the
# virtualenv is not reinstalled while pyproject.toml is unchanged.
#
# Environment:
#   SIPBRIDGE_PYTHON   interpreter for the virtualenv (default: python3, >= 3.11)
#   SIPBRIDGE_NO_APT=1 never call apt-get (report what is missing instead)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.sipbridge-setup"
PYTHON="${SIPBRIDGE_PYTHON:-python3}"

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Two scripts may run setup at once (test.sh and demo.sh): serialise them.
if command -v flock >/dev/null 2>&1 && [[ -z "${SIPBRIDGE_SETUP_LOCKED:-}" ]]; then
    export SIPBRIDGE_SETUP_LOCKED=1
    lock="${TMPDIR:-/tmp}/sipbridge-setup.$(printf '%s' "$ROOT" | sha256sum | cut -c1-12).lock"
    exec flock "$lock" bash "${BASH_SOURCE[0]}" "$@"
fi

# --- Debian packages -------------------------------------------------------

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

python_ok() {
    command -v "$PYTHON" >/dev/null 2>&1 &&
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

# `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
venv_ok() {
    "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1
}

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v sipsak >/dev/null 2>&1 || missing+=(sipsak)
command -v svwar >/dev/null 2>&1 || missing+=(sipvicious)
command -v baresip >/dev/null 2>&1 || missing+=(baresip)
command -v linphonec >/dev/null 2>&1 || missing+=(linphone-cli)
# kamailio lives in /usr/sbin, often not on a user's PATH.
command -v kamailio >/dev/null 2>&1 || [[ -x /usr/sbin/kamailio ]] || missing+=(kamailio)
# deploy/kamailio/kamailio.cfg's optional TLS (WITH_TLS) loads the tls module.
compgen -G '/usr/lib/*/kamailio/modules/tls.so' >/dev/null || missing+=(kamailio-tls-modules)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# The TLS tests make their certificates with the openssl CLI.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# Opus calls run on libopus itself (ctypes), at the rate the model side wants.
compgen -G '/usr/lib/*/libopus.so.0' >/dev/null || missing+=(libopus0)
# The compiled media path (setup.py) is built from source with gcc and Python's headers.
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The PostgreSQL server the store's tests start (its binaries are not on PATH).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if ! python_ok; then
    [[ "$PYTHON" == python3 ]] || die "$PYTHON is not a Python >= 3.11"
    missing+=(python3 python3-venv)
elif ! venv_ok && ! [[ -x "$VENV/bin/python" ]]; then
    missing+=(python3-venv)
fi

headers_ok() {
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null
}
if python_ok && ! headers_ok; then
    [[ "$(command -v "$PYTHON")" == /usr/bin/* ]] || die "no Python.h for $PYTHON (install its headers)"
    missing+=(python3-dev)
fi

if ((${#missing[@]})); then
    [[ -z "${SIPBRIDGE_NO_APT:-}" ]] || die "missing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get here"
    SUDO=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "installing ${missing[*]} needs root"
        SUDO=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has empty package lists: update first.
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v sipp >/dev/null 2>&1 || die "sipp (Debian package sip-tester) is still missing"
python_ok || die "no Python >= 3.11 as $PYTHON"

# --- virtualenv ------------------------------------------------------------

# Reinstall when the project's metadata, the compiled path's sources or the interpreter
# change (the install builds the C modules in place, next to their Python reference).
EXTRAS="agent,voice,postgres,test,dev,uvloop"
# The SIP and calls modules that mypyc compiles (MODULES in src/sipbridge/_compiled.py)
# are built from their Python source: an edit to one rebuilds them (until then they run
# from source).
compiled_sources() {
    "$PYTHON" -c 'import runpy; m = runpy.run_path("src/sipbridge/_compiled.py")
print("\n".join("src/" + m["source_path"](n) for n in m["MODULES"]))'
}
want="$({ echo "$EXTRAS"; cat pyproject.toml setup.py src/sipbridge/_compiled.py
          find src/sipbridge/media/_c -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort | xargs -r cat
          compiled_sources | xargs -r cat
          "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"

# Both compiled paths in place: the media kernels, and the SIP modules matching their source.
built() {
    "$VENV/bin/python" -c 'import sys, sipbridge.media.speed as s, sipbridge._compiled as c
m = s.missing()
sys.exit("the compiled media path did not build: " + ", ".join(m) if m else
         None if c.compiled() else "the SIP modules run from source: " + c.WHY_PURE)'
}

if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && built >/dev/null 2>&1; then
    exit 0
fi

pyversion() { "$1" -c 'import sys; print(sys.version)' 2>/dev/null; }

# A virtualenv made by another interpreter (or a broken one) is made anew.
if ! [[ -x "$VENV/bin/python" ]] || [[ "$(pyversion "$VENV/bin/python")" != "$(pyversion "$PYTHON")" ]]; then
    log "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

log "installing sipbridge (editable) with the agent, voice, postgres, test, dev and uvloop extras"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
built || die "see above"
printf '%s\n' "$want" >"$STAMP"
log "ready: $VENV"
