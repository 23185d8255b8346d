"""Our C kernels: their sources (csrc/), the build that compiles them at first use, and
their ctypes bindings, one module a kernel."""
