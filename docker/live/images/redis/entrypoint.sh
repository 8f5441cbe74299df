#!/bin/sh
# As the official image: without a config file the server listens on every interface (protected mode off),
# in /data, as the redis user.
set -e
if [ "$1" = redis-server ]; then
  shift
  chown -R redis:redis /data
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server --protected-mode no --bind '* -::*' "$@"
fi
exec "$@"
