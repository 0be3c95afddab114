"""Model organisms of singular learning theory (shipped as ``slt.models``)."""
