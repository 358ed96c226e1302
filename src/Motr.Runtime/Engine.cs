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
    /// <remarks>Should a locality fail to start or to take its segment, the localities started so far stop and the domain
    /// closes (its files and the folder's lock released) before the error is rethrown: the folder can be opened again.</remarks>
    public static Task<Engine> OpenAsync(DomainOptions options, CancellationToken cancellationToken = default) =>
        OpenAsync(options, static (i, onFault) => new Locality(i, onFault), cancellationToken);

    /// <summary>
    /// <see cref="OpenAsync(DomainOptions, CancellationToken)"/> with the localities made by <paramref name="newLocality"/>
    /// (index, fault handler): tests make one fail, as a thread that cannot start would.
    /// </summary>
    internal static async Task<Engine> OpenAsync(DomainOptions options, Func<int, Action<Locality, Exception>, Locality> newLocality,
        CancellationToken cancellationToken)
    {
        var domain = await Domain.OpenAsync(options, cancellationToken).ConfigureAwait(false);
        var localities = new Locality[domain.Segments.Count];
        int made = 0;
        try
        {
            for (int i = 0; i < localities.Length; i++)
            {
                localities[i] = newLocality(i, (l, e) => options.Warn($"{l}: unhandled exception in a turn: {e}"));
                made = i + 1;
                localities[i].Attach(domain.Segments[i]);
            }
        }
        catch
        {
            // Nobody gets this engine to close: the localities made so far and the domain (its threads, files and the
            // folder's lock) are released here, or the folder could not be opened again in this process.
            await Release(domain, localities[..made]).ConfigureAwait(false);
            throw;
        }
        return new Engine(domain, localities);
    }

    /// <summary>Stops the localities and closes the domain after a failed open; their own errors are not the one to report.</summary>
    private static async Task Release(Domain domain, Locality[] localities)
    {
        try
        {
            foreach (var l in localities)
            {
                try { await l.DisposeAsync().ConfigureAwait(false); }
                catch (Exception e) { System.Diagnostics.Trace.WriteLine($"{l}: stopping it after a failed engine open threw {e}"); }
            }
        }
        finally
        {
            try { await domain.DisposeAsync().ConfigureAwait(false); }
            catch (Exception e) { System.Diagnostics.Trace.WriteLine($"{domain.Location}: closing it after a failed engine open threw {e}"); }
        }
    }

    /// <summary>The locality that owns keys hashing to <paramref name="key"/>.</summary>
    public Locality LocalityFor(ulong key) => _localities[(int)(key % (ulong)_localities.Length)];

    /// <summary>
    /// Flushes every locality (all closed transactions durable), stops them, and closes the domain. A call made while
    /// another is closing the engine returns once that close has finished (files and the folder's lock released), not
    /// before; only the first call reports an error of the close.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called in a turn on one of the engine's localities (the returned task
    /// holds it; the engine stays open): the close waits for that locality to flush and stop, which it cannot do while
    /// the turn waits, so a caller blocking on it hung for ever.</exception>
    public ValueTask DisposeAsync()
    {
        foreach (var l in _localities)
            if (l.IsOwnerThread)
                return ValueTask.FromException(new InvalidOperationException(
                    $"{Domain.Location}: Engine.DisposeAsync called in a turn on {l}: closing waits for every locality to flush " +
                    "and stop, this one too; close the engine from outside its localities"));
        return _close.Run(CloseAsync);
    }

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
