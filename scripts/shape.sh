#!/usr/bin/env bash
# A shaped link for tests and benchmarks: three network namespaces, server -- router -- viewer,
# with a rate limit and random loss on the router, server->viewer only.
#
#   shape.sh up NAME                          # NAME-srv, NAME-rtr, NAME-view (pick a unique NAME, e.g. wc$$)
#   shape.sh set NAME RATE LOSS% [QUEUE_MS]   # e.g. `set wc1 1mbit 1 300`; `set wc1 none 0` lifts both
#   shape.sh down NAME                        # removes it all; idempotent, safe on a half-made link
#   shape.sh addr NAME srv|view               # prints that end's IP
#
# Then: ip netns exec NAME-srv whepcast serve --listen 198.18.1.2:0, and a browser under
# ip netns exec NAME-view opens http://198.18.1.2:PORT/.
#
# Why a router: this kernel has no netem, and a qdisc in the sender's own namespace holds
# packets against the sending socket's buffer (back-pressure instead of loss, which no real
# network does). On a router the bottleneck queues and drops like a real one, and the server
# and viewer stay unshaped. See /work/shared/notes/webrtc-0.21.md, "Shaping a link".
#
# Works as root, also inside `unshare -n` (named namespaces are bind mounts under /run/netns,
# which lives in the mount namespace, not the network one). Touches nothing outside the three
# namespaces: every veth is created inside them (`ip -n`), so no interface, address, route or
# iptables rule is ever added to the caller's namespace.
set -Eeuo pipefail

# Addresses from 198.18.0.0/15 (benchmarking range), existing only inside the namespaces; each
# link has its own namespaces, so concurrent links reuse the same plan without clashing.
SRV_IP=198.18.1.2 SRV_GW=198.18.1.1   # server <-> router, 198.18.1.0/24
VIEW_IP=198.18.2.2 VIEW_GW=198.18.2.1 # router <-> viewer, 198.18.2.0/24

usage() { sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2; }

# iptables: the nft and the legacy front ends both work here (the default `iptables` is nft);
# use the first that can hold a statistic rule in the router, a host may lack either. Picked
# the same way on every `set`, so a flush always reaches the rule the last `set` added (and
# the other front end is never touched: it would leave empty tables and warnings behind).
pick_iptables() {
  local ipt
  for ipt in iptables iptables-nft iptables-legacy; do
    command -v "$ipt" >/dev/null || continue
    if ip netns exec "$1" "$ipt" -w -A FORWARD -m statistic --mode random --probability 0 -j RETURN 2>/dev/null; then
      ip netns exec "$1" "$ipt" -w -D FORWARD -m statistic --mode random --probability 0 -j RETURN
      echo "$ipt"
      return 0
    fi
  done
  echo "shape.sh: no iptables front end with the statistic match works here" >&2
  return 1
}

up() {
  local n=$1
  down "$n" # a leftover of the same name (a killed run) would make `ip netns add` fail
  trap 'echo "shape.sh: up $n failed; cleaning up" >&2; down "$n"' ERR
  for ns in srv rtr view; do
    ip netns add "$n-$ns"
    ip -n "$n-$ns" link set lo up
  done
  # Both ends of each pair are born inside the namespaces; names are per namespace.
  ip -n "$n-srv" link add name rtr type veth peer name srv netns "$n-rtr"
  ip -n "$n-view" link add name rtr type veth peer name view netns "$n-rtr"
  ip -n "$n-srv" addr add "$SRV_IP/24" dev rtr
  ip -n "$n-rtr" addr add "$SRV_GW/24" dev srv
  ip -n "$n-view" addr add "$VIEW_IP/24" dev rtr
  ip -n "$n-rtr" addr add "$VIEW_GW/24" dev view
  ip -n "$n-srv" link set rtr up
  ip -n "$n-view" link set rtr up
  ip -n "$n-rtr" link set srv up
  ip -n "$n-rtr" link set view up
  # Default routes, not just the peer's /24: without media permission Chromium gathers its ICE
  # host candidate only on the default route's address (the veth's); with no default route it
  # offers just 0.0.0.0 and connects through a peer-reflexive candidate.
  ip -n "$n-srv" route add default via "$SRV_GW"
  ip -n "$n-view" route add default via "$VIEW_GW"
  # (no sysctl binary needed: procps is not in every minimal image)
  ip netns exec "$n-rtr" sh -c "echo 1 > /proc/sys/net/ipv4/ip_forward"
  trap - ERR
}

set_link() {
  local n=$1 rate=$2 loss=$3 queue_ms=${4:-300}
  [[ "$loss" =~ ^[0-9]+(\.[0-9]+)?$ && "$queue_ms" =~ ^[0-9]+$ ]] || { echo "shape.sh: LOSS% is a number, QUEUE_MS an integer" >&2; exit 2; }
  ip netns exec "$n-rtr" true 2>/dev/null || { echo "shape.sh: no link $n (run: shape.sh up $n)" >&2; exit 1; }
  # Rate: tbf on the router's egress toward the viewer (server->viewer only; the viewer's
  # RTCP, NACKs and HTTP go back unshaped).
  ip netns exec "$n-rtr" tc qdisc del dev view root 2>/dev/null || true
  if [ "$rate" != none ]; then
    local bps
    bps=$(tc_rate_bps "$rate")
    # burst = 10 ms at the rate, but at least two full-size frames (tbf drops a packet larger
    # than its bucket), so the link never runs faster than `rate` for more than a blink.
    # limit = burst + rate * queue time: that much waits for tokens, more is tail-dropped, like
    # a real bottleneck's buffer (1 Mbit/s, 300 ms: 37500 bytes of queue; tc shows "lat 300ms").
    local burst=$((bps / 8 / 100))
    [ "$burst" -ge 3028 ] || burst=3028
    local limit=$((burst + bps / 8 * queue_ms / 1000))
    ip netns exec "$n-rtr" tc qdisc add dev view root tbf rate "$bps" burst "$burst" limit "$limit"
  fi
  # Loss: random drop of UDP (media, RTCP, STUN, DTLS) forwarded toward the viewer. TCP (the
  # WHEP HTTP exchange, the page load) is spared so setup is not what a run measures.
  # The router namespace is ours alone: its FORWARD chain holds nothing but this rule.
  local ipt
  ipt=$(pick_iptables "$n-rtr")
  ip netns exec "$n-rtr" "$ipt" -w -F FORWARD
  if awk -v p="$loss" 'BEGIN { exit !(p > 0) }'; then
    local prob
    prob=$(awk -v p="$loss" 'BEGIN { if (p > 100) exit 1; printf "%.6f", p / 100 }')
    ip netns exec "$n-rtr" "$ipt" -w -A FORWARD -o view -p udp \
      -m statistic --mode random --probability "$prob" -j DROP
  fi
}

# tc's rate units (kbit, mbit, bps = bytes/s, ...) to bits per second, for the sizes above.
tc_rate_bps() {
  awk -v r="$1" 'BEGIN {
    if (!match(r, /^[0-9.]+/)) { print "shape.sh: bad rate " r > "/dev/stderr"; exit 1 }
    v = substr(r, 1, RLENGTH); u = tolower(substr(r, RLENGTH + 1))
    m["bit"] = 1; m[""] = 1; m["kbit"] = 1e3; m["mbit"] = 1e6; m["gbit"] = 1e9
    m["bps"] = 8; m["kbps"] = 8e3; m["mbps"] = 8e6
    if (!(u in m)) { print "shape.sh: bad rate unit " u > "/dev/stderr"; exit 1 }
    printf "%d\n", v * m[u] }'
}

down() {
  local n=$1
  for ns in view srv rtr; do
    [ -e "/run/netns/$n-$ns" ] || continue
    # Processes still inside (a crashed test's server or browser) are ours: end them by pid,
    # else they keep the namespace alive, anonymous, after its name is gone.
    local pids
    pids=$(ip netns pids "$n-$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
      kill -TERM $pids 2>/dev/null || true
      sleep 0.5
      pids=$(ip netns pids "$n-$ns" 2>/dev/null || true)
      [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
    fi
    # Deleting a namespace takes its veth ends (and their peers), qdiscs and rules with it.
    ip netns del "$n-$ns" 2>/dev/null || true
  done
}

[ $# -ge 2 ] || usage
cmd=$1 name=$2
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "shape.sh: bad name $name" >&2; exit 2; }
case "$cmd" in
  up) up "$name" ;;
  set) [ $# -ge 4 ] || usage; set_link "$name" "$3" "$4" "${5:-300}" ;;
  down) down "$name" ;;
  addr)
    case "${3:-}" in
      srv) echo "$SRV_IP" ;;
      view) echo "$VIEW_IP" ;;
      *) usage ;;
    esac ;;
  *) usage ;;
esac
