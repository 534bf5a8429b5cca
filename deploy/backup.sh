#!/bin/sh
# Back up a gateway's data dir while the gateway runs:  deploy/backup.sh DATA_DIR DEST_DIR
#
# Every SQLite database (the store gasgate.db, the telemetry spool, ...) is copied with SQLite's
# online backup, a consistent snapshot even while the gateway writes (a plain cp of a WAL
# database can be torn), then checked with PRAGMA integrity_check. Every other file is copied
# as it is. Uses the sqlite3 CLI, or Python's sqlite3 module where there is no CLI (the gasgate
# image): docker compose exec -T gateway sh -s /var/lib/gasgate /var/lib/gasgate/backup < deploy/backup.sh
# The snapshot lands in DEST_DIR/gasgate-<UTC time>; a DEST_DIR inside DATA_DIR is skipped.
set -eu

data=${1:?usage: backup.sh DATA_DIR DEST_DIR}
dest_root=${2:?usage: backup.sh DATA_DIR DEST_DIR}
[ -d "$data" ] || { echo "backup: $data is not a directory" >&2; exit 1; }
dest=$dest_root/gasgate-$(date -u +%Y%m%dT%H%M%SZ)
(umask 077 && mkdir -p "$dest")

is_sqlite() { [ -f "$1" ] && [ "$(head -c 15 "$1" 2>/dev/null)" = "SQLite format 3" ]; }

if command -v sqlite3 >/dev/null 2>&1; then
    snapshot() { sqlite3 "$1" ".timeout 10000" ".backup '$2'"; }
    check() { sqlite3 "$1" "PRAGMA integrity_check"; }
else
    snapshot() {
        python3 -c 'import sqlite3, sys
src = sqlite3.connect(sys.argv[1], timeout=10)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
src.close()' "$1" "$2"
    }
    check() {
        python3 -c 'import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("PRAGMA integrity_check").fetchone()[0])' "$1"
    }
fi

status=0
for path in "$data"/* "$data"/.[!.]*; do
    [ -e "$path" ] || continue
    name=$(basename "$path")
    case $path in
        "$dest_root" | "$dest_root"/*) continue ;;  # our own output
        *-wal | *-shm | *-journal) continue ;;      # inside the snapshot of their database
        *\'*) echo "backup: $path: a quote in the name; copy it by hand" >&2; status=1; continue ;;
    esac
    if is_sqlite "$path"; then
        snapshot "$path" "$dest/$name"
        verdict=$(check "$dest/$name")
        if [ "$verdict" != ok ]; then
            echo "backup: $name: integrity check failed: $verdict" >&2
            status=1
        fi
    else
        cp -a "$path" "$dest/"
    fi
done
echo "backup: $data -> $dest"
exit $status
