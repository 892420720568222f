// RahaLab: censor detectors as pure functions over observed bytes (and later the namespace lab).
