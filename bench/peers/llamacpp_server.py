"""Start llama-cpp-python's OpenAI-compatible server with llama.cpp's extra buffer types off.

Run with the Python of the environment bench/peers/llamacpp.sh made; arguments are
llama_cpp.server's own (--model, --port, --n_ctx, ...). On this project's CPUs llama.cpp
crashes while repacking weights into its extra buffer types, and the server offers no
setting for `use_extra_bufts`, so the default model parameters are patched here.
"""

import sys

import llama_cpp.llama_cpp as lib

_default_params = lib.llama_model_default_params


def _params_without_extra_bufts():  # type: ignore[no-untyped-def]
    params = _default_params()
    params.use_extra_bufts = False
    return params


lib.llama_model_default_params = _params_without_extra_bufts

if __name__ == "__main__":
    from llama_cpp.server.__main__ import main

    sys.argv[0] = "llama_cpp.server"
    main()
