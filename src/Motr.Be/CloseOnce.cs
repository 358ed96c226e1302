namespace Motr.Be;

/// <summary>
/// A close that runs once, for <c>DisposeAsync</c>: the first call runs it; a call made while it runs, or after,
/// returns once it has finished (files and locks released), not before; only the first call reports its error.
/// </summary>
internal sealed class CloseOnce
{
    private Task? _closing; // the first call's close, which later calls wait for

    /// <summary>Runs <paramref name="close"/> if no call did before; else waits for that call's close.</summary>
    public ValueTask Run(Func<Task> close)
    {
        var closing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (Interlocked.CompareExchange(ref _closing, closing.Task, null) is { } first) return AwaitClosed(first);
        return new ValueTask(CloseInto(closing, close));
    }

    /// <summary>A later caller's close: waits for the first one's; its error is the first caller's to report.</summary>
    private static async ValueTask AwaitClosed(Task first)
    {
        try { await first.ConfigureAwait(false); }
        catch { }
    }

    private static async Task CloseInto(TaskCompletionSource closing, Func<Task> close)
    {
        try
        {
            await close().ConfigureAwait(false);
            closing.TrySetResult();
        }
        catch (Exception e)
        {
            closing.TrySetException(e);
            _ = closing.Task.Exception;
            throw;
        }
    }
}
