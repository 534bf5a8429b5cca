#!/bin/bash
# Run once by the influxdb:2 image, on its first start, right after DOCKER_INFLUXDB_INIT_MODE=setup
# has created the org, the bucket and the admin token (the influx CLI is already logged in, and
# DOCKER_INFLUXDB_INIT_BUCKET_ID is the new bucket's id).
#
# Grafana's gasgate dashboards are InfluxQL; InfluxDB 2 answers InfluxQL only for a database /
# retention policy pair mapped onto a bucket (a DBRP mapping). Without it every panel says
# "database not found".
set -euo pipefail

db=${GASGATE_INFLUXQL_DB:-gasgate}
influx v1 dbrp create \
    --db "$db" \
    --rp autogen \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID:?set by the influxdb image after setup}" \
    --default
echo "gasgate: InfluxQL database $db (retention policy autogen) maps onto bucket ${DOCKER_INFLUXDB_INIT_BUCKET}"
