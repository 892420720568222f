@_exported import RahaTransport
