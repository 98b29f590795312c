"""Prefect flows: coarse units of work (a day, a month, a model fit) composed from the thin tasks of
`tasks/`. Each flow loads the one Settings object (`load_settings(config_file, **overrides)`), opens one
Dask client for the whole flow run (`soilcube.cluster.dask_client`: the configured scheduler, or a local
cluster) and hands `settings.model_dump()` to its tasks, which run in the flow's process with Prefect's
default task runner while Dask does the fine-grained work.

Deployments: flows/prefect.yaml (`prefect deploy --all --prefect-file flows/prefect.yaml` from the repository
root; entrypoints are relative to it, and to /opt/soilcube in the image).
"""
