"""Plain-PyTorch references, one per op: the test oracle and the fallback of
last resort. They depend on nothing but torch and are written for clarity,
not speed."""
