#!/bin/sh
# Back up a gateway's data dir while the gateway runs:  deploy/backup.sh DATA_DIR DEST_DIR [KEEP]
#
# Every SQLite database (the store gasgate.db, the telemetry spool, ...) is copied with SQLite's
# online backup, a consistent snapshot even while the gateway writes (a plain cp of a WAL
# database can be torn), then checked with PRAGMA integrity_check. Every other file is copied
# as it is. Uses the sqlite3 CLI, or Python's sqlite3 module where there is no CLI (the gasgate
# image): docker compose exec -T gateway sh -s /var/lib/gasgate /var/lib/gasgate/backup < deploy/backup.sh
# The snapshot lands in DEST_DIR/gasgate-<UTC time>; a DEST_DIR inside DATA_DIR is skipped.
# KEEP: after a good snapshot, delete all but the newest KEEP snapshots (a full disk stops the
# gateway's store from writing alarms, so a timer that never prunes is a slow failure).
set -eu

usage="usage: backup.sh DATA_DIR DEST_DIR [KEEP]"
data=${1:?$usage}
dest_root=${2:?$usage}
keep=${3:-}
case $keep in
    "") ;;
    *[!0-9]* | 0*) echo "backup: KEEP must be a number >= 1" >&2; exit 2 ;;
esac
[ -d "$data" ] || { echo "backup: $data is not a directory" >&2; exit 1; }
dest=$dest_root/gasgate-$(date -u +%Y%m%dT%H%M%SZ)
(umask 077 && mkdir -p "$dest_root" && mkdir "$dest")  # never into an existing snapshot

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
if [ "$status" -eq 0 ] && [ -n "$keep" ]; then
    # Snapshot names sort by time; only our own gasgate-<time> directories are ever deleted.
    ls -1d "$dest_root"/gasgate-[0-9]*T[0-9]*Z 2>/dev/null | sort -r | tail -n +$((keep + 1)) |
        while IFS= read -r old; do
            rm -rf -- "$old"
            echo "backup: pruned $old"
        done
fi
exit $status
