"""Everything on disk: head checkpoints (native and released layouts), their config, the registry
of released heads, atomic writes, and the packaged offline models. Imports nothing else of ours."""
