// Censor detectors live here as pure functions over observed bytes.
import RahaWire
