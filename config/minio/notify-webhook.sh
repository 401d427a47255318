#!/bin/sh
# Point MinIO's bucket notifications at MediaMill: every object created under the
# ingest prefix is POSTed to /v0/events/storage and becomes one ingest job.
#
#   MEDIAMILL_BUCKET_EVENTS_TOKEN=... MEDIAMILL_WEBHOOK_URL=http://api:8000/v0/events/storage \
#   MEDIAMILL_S3_BUCKET=mediamill config/minio/notify-webhook.sh
#
# Needs `mc` with an alias for the MinIO server (MINIO_ALIAS, default `local`; e.g.
# `mc alias set local http://minio:9000 ACCESS_KEY SECRET_KEY`). The token must be the
# API's MEDIAMILL_BUCKET_EVENTS_TOKEN: MinIO sends it as `Authorization: Bearer <token>`.
# queue_dir (a persistent directory on the MinIO server, outside its data dir) keeps
# events while the API is down and re-sends them, so nothing is lost; MediaMill makes
# one job per object version however often an event arrives. Only the ingest prefix is
# subscribed: MediaMill's own writes (originals/, renditions/, packages/, incoming/)
# must not come back as uploads.
set -eu

ALIAS="${MINIO_ALIAS:-local}"
BUCKET="${MEDIAMILL_S3_BUCKET:?set MEDIAMILL_S3_BUCKET to the bucket of the store}"
URL="${MEDIAMILL_WEBHOOK_URL:?set MEDIAMILL_WEBHOOK_URL, e.g. http://api:8000/v0/events/storage}"
TOKEN="${MEDIAMILL_BUCKET_EVENTS_TOKEN:?set MEDIAMILL_BUCKET_EVENTS_TOKEN as set for the API}"
TARGET="${MINIO_WEBHOOK_ID:-mediamill}"
# The store's key prefix (s3://bucket/PREFIX), if any, then the ingest prefix.
STORE_PREFIX="${MEDIAMILL_STORE_PREFIX:-}"
EVENTS_PREFIX="${MEDIAMILL_BUCKET_EVENTS_PREFIX:-inbox/}"
PREFIX="${STORE_PREFIX:+${STORE_PREFIX%/}/}${EVENTS_PREFIX}"

mc admin config set "$ALIAS" "notify_webhook:$TARGET" \
  endpoint="$URL" auth_token="$TOKEN" \
  queue_dir="${MINIO_QUEUE_DIR:-/var/lib/minio-events/mediamill}" queue_limit="100000"
# MinIO loads a new notification target on restart (set MINIO_SKIP_RESTART=1 to do it later).
if [ "${MINIO_SKIP_RESTART:-0}" != "1" ]; then
  mc admin service restart "$ALIAS"
fi
mc event add "$ALIAS/$BUCKET" "arn:minio:sqs::$TARGET:webhook" --event put --prefix "$PREFIX"
mc event list "$ALIAS/$BUCKET"
