#!/bin/sh
# Build the site broker's password file: the service users from the env file, and one user per
# MQTT-native kit device (username = device id) from the devices file.
#
#   deploy/mosquitto/make-passwd.sh [ENV_FILE] [DEVICES_FILE] [OUT]
#
# ENV_FILE      default deploy/.env: GATEWAY_MQTT_PASSWORD, BRIDGE_MQTT_PASSWORD (both required),
#               SIM_MQTT_PASSWORD (optional: the simulator's user exists only when it is set)
# DEVICES_FILE  default deploy/mosquitto/secrets/devices, optional: "device_id:password" lines;
#               blank lines and lines starting with # are skipped
# OUT           default deploy/mosquitto/secrets/passwd (hashed; mounted by docker-compose.yml)
#
# Hashing uses mosquitto_passwd from the PATH, or the eclipse-mosquitto image through docker.
# Re-run it after any change, then reload the broker: docker compose kill -s HUP mosquitto.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
env_file=${1:-$here/../.env}
devices=${2:-$here/secrets/devices}
out=${3:-$here/secrets/passwd}

fail() { echo "make-passwd: $*" >&2; exit 1; }

# The env file is read, not sourced: it is docker compose's KEY=VALUE format, not shell.
setting() {
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$env_file" | tail -n 1 \
        | sed -e 's/[[:space:]]*$//' -e "s/^\"\(.*\)\"$/\1/" -e "s/^'\(.*\)'$/\1/"
}

[ -r "$env_file" ] || fail "$env_file: cannot read the env file (copy deploy/.env.example)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
plain=$work/passwd

add_user() { # user password where
    case $2 in
        "" | change-me) fail "$3: set a real password for $1" ;;
    esac
    printf '%s:%s\n' "$1" "$2" >>"$plain"
}

: >"$plain"
add_user gasgate.gateway "$(setting GATEWAY_MQTT_PASSWORD)" "$env_file: GATEWAY_MQTT_PASSWORD"
add_user gasgate.bridge "$(setting BRIDGE_MQTT_PASSWORD)" "$env_file: BRIDGE_MQTT_PASSWORD"
sim=$(setting SIM_MQTT_PASSWORD)
[ -z "$sim" ] || add_user gasgate.sim "$sim" "$env_file: SIM_MQTT_PASSWORD"

if [ -e "$devices" ]; then
    line_no=0
    while IFS= read -r line || [ -n "$line" ]; do
        line_no=$((line_no + 1))
        case $line in "" | "#"*) continue ;; esac
        device=${line%%:*}
        # The device id is the MQTT username and the %u of the ACL: the contract's alphabet
        # only, so it can never widen a topic (no "/", "+" or "#") nor collide with a service
        # user (they contain a ".").
        if ! printf '%s' "$device" | grep -Eqx '[A-Za-z0-9_-]{1,64}'; then
            fail "$devices:$line_no: device id must be 1-64 of A-Z a-z 0-9 _ -"
        fi
        [ "$line" != "$device" ] || fail "$devices:$line_no: expected device_id:password"
        add_user "$device" "${line#*:}" "$devices:$line_no"
    done <"$devices"
fi

dupes=$(cut -d: -f1 "$plain" | sort | uniq -d)
[ -z "$dupes" ] || fail "user(s) listed twice: $dupes"

if command -v mosquitto_passwd >/dev/null 2>&1; then
    mosquitto_passwd -U "$plain"
else
    chmod 0644 "$plain"
    docker run --rm --user "$(id -u)" -v "$work:/work" eclipse-mosquitto:2 \
        mosquitto_passwd -U /work/passwd
fi
# Hashes only (PBKDF2-SHA512); the broker runs as another uid and must be able to read it.
chmod 0644 "$plain"
(umask 022 && mkdir -p "$(dirname "$out")")
mv "$plain" "$out"
echo "make-passwd: $(wc -l <"$out") user(s) written to $out"
