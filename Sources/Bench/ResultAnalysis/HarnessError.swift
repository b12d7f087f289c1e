/// The harness's errors, one family: each says in one sentence what failed and, where there is
/// one, what to do. `iobench`'s `main` is the one place an error becomes an exit status: a
/// harness error is 1 (a regression found is 2, a usage error 64, both decided there too).
public protocol HarnessError: Error, CustomStringConvertible {}

extension CheckError: HarnessError {}
extension CSV.ParseError: HarnessError {}
