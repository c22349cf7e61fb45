"""Problems with verifiers (reasoning-gym, JSONL) and the prompts built from them; shared by
rejection sampling (training) and the evaluation harness. Imports `inference` and `hub`."""
