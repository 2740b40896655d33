#!/bin/sh
# Waits until the portier started by a .vtc file has applied its [l7] config (its admin API
# then lists the bound listeners), or fails as soon as the process is gone.
# Usage: ready.sh ADMIN_ADDR:PORT PID
admin=$1
pid=$2
i=0
while [ $i -lt 200 ]; do
	if curl -sf "http://$admin/status" 2>/dev/null | grep -q '"listeners"'; then
		exit 0
	fi
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "portier (pid $pid) exited before its listeners were up" >&2
		exit 1
	fi
	sleep 0.05
	i=$((i + 1))
done
echo "portier did not apply its config within 10 s" >&2
exit 1
