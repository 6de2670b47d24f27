"""Convergence Rate Control: the paper's strategy, its variants and what they compute.

    crc.py             Algorithm 1 (strategy "crc"): groups scored by λ⁺min of the class-trace NTK
    greedy.py          greedy CRC, one sample at a time (strategy "crc_greedy", paper §3.2)
    infinite.py        CRC on the infinite-width NTK of an architecture (strategy "crc_infinite")
    gram.py            the Gram matrices CRC scores, built once per acquisition
    backend_gram.py    what the Grams share: the rank rule, the eigenvalue backend, the top-k
    spectra.py         λ⁺min of many small matrices on the host (float64)
    device_spectra.py  the same on the accelerator, and where the eigenvalues run (`Spectra`)
    diagnostics.py     how decisive an acquisition was: ceiling, runner-up, ties

Importing the package registers the three strategies.
"""

from crc_jax.acquisition.crc import crc, greedy, infinite  # noqa: F401 (registration)
