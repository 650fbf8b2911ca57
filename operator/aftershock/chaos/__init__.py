"""Chaos kinds: one module per kind (`node_kill` first).

Rule: choosing what to disturb is pure and deterministic for a seed; the deletion itself is
done through `aftershock.kube`, never from here.
"""
