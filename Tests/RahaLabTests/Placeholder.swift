import Testing
@testable import RahaLab
@Test func labBuilds() {}
