# Sourced by scripts/demo, scripts/test and scripts/bench: installs the Debian packages named
# in "$@" that are missing, with apt-get (through sudo when not root).  Does nothing when all are
# present, so every script is safe to run twice.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# meson setup, or a reconfigure of an existing build dir with the given options.
setup_build() {
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        rm -rf "$dir"
        meson setup "$dir" "$@" >/dev/null
    fi
}

BASE_PACKAGES=(gcc pkg-config meson ninja-build libffi-dev check)
