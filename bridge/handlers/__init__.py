"""What happens around a task, per protocol: decode, states, callbacks, retries.

The worker loop (``bridge.worker``) owns fetching, threads and acks; a handler
turns a batch of deliveries into jobs and a batch of outcomes into state
writes, follow-up messages and acks, in its protocol's own terms.
"""
