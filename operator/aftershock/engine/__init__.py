"""The trial engine: plain asyncio, no kopf, no Kubernetes client, no SQL.

It drives one Campaign: lock the subject, wait for steady state, choose and kill victims,
observe the recovery through a pod watch (and PD, when configured), record every moment in
the ledger, and publish the status as a projection of the ledger. Everything it touches
comes in through the ports in `aftershock.engine.ports`, so unit tests run it against fakes
and a fake clock.
"""
