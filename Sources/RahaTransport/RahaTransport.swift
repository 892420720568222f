import RahaWire
