using Motr.Be;

namespace Motr.Runtime;

/// <summary>
/// A domain running on localities: opens (and recovers) the domain, starts one locality per segment
/// and makes it the segment's owner. Closing flushes every locality, stops them, then closes the domain.
/// </summary>
public sealed class Engine : IAsyncDisposable
{
    private readonly Locality[] _localities;
    private readonly CloseOnce _close = new(); // the first DisposeAsync's close, which later calls wait for

    private Engine(Domain domain, Locality[] localities)
    {
        Domain = domain;
        _localities = localities;
    }

    /// <summary>The domain: log, segments, recovery report.</summary>
    public Domain Domain { get; }

    /// <summary>The localities; locality i owns segment i + 1.</summary>
    public IReadOnlyList<Locality> Localities => _localities;

    /// <summary>Opens the domain described by <paramref name="options"/> and starts its localities.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled before recovery recorded
    /// its checkpoint: it stops at the next segment, record or segment sync, and releases the files and the folder (see
    /// <see cref="Domain.OpenAsync"/>; the task is cancelled).</exception>
    public static async Task<Engine> OpenAsync(DomainOptions options, CancellationToken cancellationToken = default)
    {
        var domain = await Domain.OpenAsync(options, cancellationToken).ConfigureAwait(false);
        var localities = new Locality[domain.Segments.Count];
        for (int i = 0; i < localities.Length; i++)
        {
            localities[i] = new Locality(i, (l, e) => options.Warn($"{l}: unhandled exception in a turn: {e}"));
            localities[i].Attach(domain.Segments[i]);
        }
        return new Engine(domain, localities);
    }

    /// <summary>The locality that owns keys hashing to <paramref name="key"/>.</summary>
    public Locality LocalityFor(ulong key) => _localities[(int)(key % (ulong)_localities.Length)];

    /// <summary>
    /// Flushes every locality (all closed transactions durable), stops them, and closes the domain. A call made while
    /// another is closing the engine returns once that close has finished (files and the folder's lock released), not
    /// before; only the first call reports an error of the close.
    /// </summary>
    public ValueTask DisposeAsync() => _close.Run(CloseAsync);

    private async Task CloseAsync()
    {
        Exception? flushError = null;
        if (Domain.Failure is null)
        {
            var flushes = new Task[_localities.Length];
            for (int i = 0; i < _localities.Length; i++)
            {
                var loc = _localities[i];
                flushes[i] = loc.RunAsync(async () => await loc.Segment!.FlushAsync());
            }
            // A flush that fails must not keep the files and the folder's lock: the domain closes whatever happened,
            // and an unexpected error is rethrown after.
            try { await Task.WhenAll(flushes).ConfigureAwait(false); }
            catch (LogFailedException) { }
            catch (Exception e) { flushError = e; }
        }
        try
        {
            foreach (var l in _localities) await l.DisposeAsync().ConfigureAwait(false);
        }
        finally
        {
            await Domain.DisposeAsync().ConfigureAwait(false);
        }
        if (flushError is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(flushError);
    }
}
