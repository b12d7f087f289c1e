#!/usr/bin/env bash
# Starts each backend on a free port, echoes a line through it with bash's /dev/tcp, stops it.
set -euo pipefail
bin=${1:?usage: selfcheck.sh path/to/iobench}
for backend in blocking epoll io_uring; do
  coproc server { "$bin" serve --backend "$backend" --port 0; }
  read -r -t 10 line <&"${server[0]}"
  port=${line#listening on 127.0.0.1:}; port=${port%% *}
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'hello iobench\n' >&3
  read -r -t 5 reply <&3
  exec 3>&-
  echo quit >&"${server[1]}"
  wait "$server_PID"
  [ "$reply" = "hello iobench" ] && echo "$backend: echo ok ($line)" || { echo "$backend: echo FAILED"; exit 1; }
done
