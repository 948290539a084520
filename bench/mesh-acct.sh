#!/usr/bin/env bash
# mesh-acct: what the kernel mesh's byte accounting (FLOTILLA-MESH-ACCT,
# docs/network.md) costs, measured on the NAT alone: in a network namespace
# of its own, `mesh-bench serve` on 9100 and the kernel path's rules by
# hand (a route chain that marks and DNATs 9200 to it), then `mesh-bench
# against` with the accounting chain hooked in and not, three rounds, 1 and
# 16 clients, 3 s a scenario. Needs root and iptables.
#
#   bench/mesh-acct.sh [MESH_BENCH]   (default target/release/mesh-bench:
#                                      cargo build --release -p flotilla-net --bin mesh-bench)
set -u
NS=fmacct MB=$(realpath "${1:-$(dirname "$0")/../target/release/mesh-bench}")
[ -x "$MB" ] || { echo "mesh-acct.sh: no $MB" >&2; exit 1; }
trap 'kill "${SRV:-}" 2>/dev/null; ip netns del $NS 2>/dev/null' EXIT
ip netns del $NS 2>/dev/null; ip netns add $NS; ip -n $NS link set lo up
X() { ip netns exec $NS "$@"; }
X $MB serve --port 9100 >/dev/null 2>&1 &
SRV=$!
sleep 0.5
M=0x2000000/0x2000000
X iptables -t nat -N FLM; X iptables -t nat -A FLM -j CONNMARK --set-xmark $M
X iptables -t nat -A FLM -p tcp -j DNAT --to-destination 127.0.0.1:9100
X iptables -t nat -A OUTPUT -p tcp --dport 9200 -j FLM
X iptables -N ACCT
X iptables -A ACCT -p tcp -m conntrack --ctorigdstport 9200 --ctdir ORIGINAL -m comment --comment FLM/in -j RETURN
X iptables -A ACCT -p tcp -m conntrack --ctorigdstport 9200 --ctdir REPLY -m comment --comment FLM/out -j RETURN
acct_on()  { X iptables -I OUTPUT -m connmark --mark $M -j ACCT; X iptables -I INPUT ! -i lo -m connmark --mark $M -j ACCT; }
acct_off() { X iptables -D OUTPUT -m connmark --mark $M -j ACCT; X iptables -D INPUT ! -i lo -m connmark --mark $M -j ACCT; }
for round in 1 2 3; do
  for mode in off on; do
    [ $mode = on ] && acct_on
    for c in 1 16; do
      out=$(X $MB against --direct 127.0.0.1:9100 --mesh nat=127.0.0.1:9200 --clients $c --seconds 3 2>&1)
      echo "round $round acct=$mode clients=$c: $(echo "$out" | grep -i "ratio" | tr '\n' ' ')"
    done
    [ $mode = on ] && acct_off
  done
done
X iptables -nvx -L ACCT | head -5
