"""What runs at every decoding step, engine-agnostic: the heads, the feature math, the hook that
captures hidden states, the transformers processor and its generation checks. Imports `hub` only."""
