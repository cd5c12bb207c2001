// BTC torch glue for CUDA tensors: placeholder (no CUDA impls registered yet).
#include "btc/btc_checks.h"
