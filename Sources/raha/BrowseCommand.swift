import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import RahaMail
import RahaTransport
import RahaWire

/// `raha gateway`: outside, fetches pages for its contacts and answers by mail.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Serve the text-only browser: fetch pages for your contacts and answer over mail.",
        discussion: """
        Runs outside, with free internet and a mail account of its own (set up
        with `raha mail setup --data DIR`). Only contacts (added with `raha mail
        add`) are served, each with a daily quota; pages go back as compact text.
          raha mail setup --data /srv/gateway --address gateway@example.org --smtp … --imap …
          raha mail invite --data /srv/gateway --name gateway   # give this to people inside
          raha mail add 'raha-invite://…' --data /srv/gateway   # each person's invite
          raha gateway --data /srv/gateway
        """
    )

    @Option(help: "Pages per contact per day.") var requestsPerDay = GatewayPolicy().requestsPerDay
    @Option(help: "Rendered megabytes per contact per day.") var megabytesPerDay = GatewayPolicy().bytesPerDay >> 20
    @Option(help: "Kilobytes of HTML fetched per page at most.") var maxPageKB = GatewayPolicy().maximumPageBytes >> 10
    @Option(help: "Seconds to wait for new mail in one round.") var wait = 25
    @Flag(help: "Fetch pages at private and loopback addresses too (tests only).") var allowPrivate = false
    @OptionGroup var location: MailCommand.Location

    func run() async throws {
        lineBufferedOutput()
        let messenger = try location.messenger()
        var policy = GatewayPolicy()
        policy.requestsPerDay = requestsPerDay
        policy.bytesPerDay = megabytesPerDay << 20
        policy.maximumPageBytes = maxPageKB << 10
        policy.allowPrivate = allowPrivate
        print("Gateway \(messenger.account.address) serving \(try messenger.contacts().count) contact(s) (Ctrl-C to stop)")
        var pause = 0
        while true {
            do {
                _ = try await messenger.sendDue()
                try await messenger.receive(waitingUpTo: .seconds(Int64(wait)))
                let exitPolicy = ExitPolicy(allowPrivate: allowPrivate)
                let served = try await messenger.servePendingRequests(policy: policy) { url, limit in
                    try await fetchPage(url, limit: limit, allowing: { exitPolicy.allows($0) })
                }
                if served > 0 {
                    print("Answered \(served) page request(s)")
                    _ = try await messenger.sendDue()
                }
                pause = 0
            } catch {
                pause = min(300, max(5, pause * 2))
                print("(\(error); trying again in \(pause) s)")
                try await Task.sleep(nanoseconds: UInt64(pause) * 1_000_000_000)
            }
        }
    }
}

/// Fetches a page directly (HTTP or HTTPS, redirects followed, at most
/// `limit` bytes), only from addresses `allowing` accepts when it is given.
func fetchPage(_ url: URL, limit: Int, allowing: (@Sendable (SocketAddress) -> Bool)? = nil) async throws -> (body: [UInt8], contentType: String?) {
    var fetcher = WebFetcher(deadline: .seconds(30), maxBodyBytes: limit, maxRedirects: 5)
    fetcher.what = "page"
    fetcher.addressFilter = allowing
    return try await fetcher.getWithType(try WebURL(parsing: url.absoluteString), group: MultiThreadedEventLoopGroup.singleton)
}

/// `raha browse URL` or `raha browse N`: a page through the gateway, over mail.
struct BrowseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "browse",
        abstract: "Read a web page through a gateway over mail, as compact text with numbered links.",
        discussion: """
          raha browse https://example.org/news     # ask the gateway, wait for the answer
          raha browse 3                            # follow link 3 of the last page
        Pages are kept: the same address within an hour is shown from the cache
        (--reload asks again). If the answer is slow, it is kept when it comes
        (with raha mail inbox or watch) and shown by the next raha browse.
        """
    )

    @Argument(help: "A URL, or the number of a link on the last page shown.") var target: String
    @Option(help: "The gateway contact's name.") var via = "gateway"
    @Option(help: "Seconds to wait for the answer.") var timeout = 120
    @Flag(help: "Ask again even if the page is in the cache.") var reload = false
    @OptionGroup var location: MailCommand.Location

    func run() async throws {
        let messenger = try location.messenger()
        var url = target
        if let number = Int(target) {
            guard let id = messenger.lastPageID, let last = try messenger.page(for: id) else {
                throw UsageFailure("no page shown yet to follow link \(number) on: give a URL first")
            }
            guard (1...max(1, last.links.count)).contains(number), number <= last.links.count else {
                throw UsageFailure("the last page (\(last.url)) has \(last.links.count) link(s); \(number) is not one")
            }
            url = last.links[number - 1]
        } else if !url.contains("://") {
            url = "https://" + url
        }
        if !reload, let cached = try messenger.cachedPage(url: url, maxAge: 3600) {
            try show(cached, messenger)
            return
        }
        let id: String
        do { id = try messenger.requestPage(url, via: via) } catch { throw UsageFailure("\(error)") }
        let started = Date()
        _ = try await messenger.sendDue()
        while Date().timeIntervalSince(started) < Double(timeout) {
            if let page = try messenger.page(for: id) {
                try show(page, messenger)
                return
            }
            do {
                _ = try await messenger.sendDue()
                try await messenger.receive(waitingUpTo: .seconds(5))
            } catch {
                print("(\(error))")
                try await Task.sleep(nanoseconds: 5_000_000_000)
            }
        }
        if let page = try messenger.page(for: id) {
            try show(page, messenger)
            return
        }
        print("Asked the gateway for \(url); no answer within \(timeout) s. It will be kept when it comes: run this again later.")
        throw ExitCode(2)
    }

    private func show(_ page: FetchedPage, _ messenger: Messenger) throws {
        print(page.text, terminator: "")
        if page.error == nil { try messenger.showed(page) }
    }
}
