"""Chaos kinds: one module per kind (`pod_kill`, the `node_kill` chaos type, first).

Rule: choosing what to disturb is pure and deterministic for a seed; the deletion itself is
done through `aftershock.kube`, never from here.
"""
