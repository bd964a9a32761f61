# shellcheck shell=bash
# The Debian packages tmlfleet needs to build, test and run its local fleet.
# Sourced by scripts/test, scripts/quickstart and scripts/bench.

TML_DEB_PACKAGES=(
    build-essential cmake ninja-build pkg-config git
    clang libclang-rt-14-dev
    mosquitto mosquitto-clients libmosquitto-dev
    libsqlite3-dev sqlite3
    libcurl4-openssl-dev zlib1g-dev
    libmbedtls-dev openssl libssl-dev
    libuv1-dev libcmocka-dev libinih-dev libcjson-dev libcbor-dev
    python3 python3-cryptography python3-cbor2
    gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
    sox faketime iproute2 systemd dpkg-dev file
)

# tml_install_deps: install whatever of TML_DEB_PACKAGES is missing.
# Runs apt-get update once, and only when something is missing.
tml_install_deps() {
    local missing=() p
    for p in "${TML_DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "tmlfleet: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}
