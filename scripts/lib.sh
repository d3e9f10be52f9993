# Shared by scripts/demo and scripts/test: set-up on a fresh Debian/Ubuntu
# machine, and small helpers. Source it; do not run it.

FINDERD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages the build, the tests and the demo use.
APT_PACKAGES=(build-essential clang pkg-config python3 python3-dev python3-venv
              strace valgrind lua5.4 liblua5.4-dev bindfs fuse3)

step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"; fi
}

# Install the Debian packages that are missing (no-op when all are present).
install_apt_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    step "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_prerequisites() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs)"
    install_apt_packages "${APT_PACKAGES[@]}" "$@"
}

# The CPython used for tooling and the demo: pyenv's 3.11 when present, else python3.
host_python() {
    local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    local candidate
    for candidate in "$pyenv_root"/versions/3.11.*/bin/python3.11; do
        [ -x "$candidate" ] && { echo "$candidate"; return; }
    done
    command -v python3
}

# A venv at $1 made by interpreter $2 with packages $3...; reused when present.
ensure_venv() {
    local venv=$1 python=$2; shift 2
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    [ $# -eq 0 ] || "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
