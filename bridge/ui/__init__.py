"""``mbridge ui``: a read-mostly web view for operators (queues over time, workers, a task by
id, dead letters with replay and delete), served from the package on 127.0.0.1."""
