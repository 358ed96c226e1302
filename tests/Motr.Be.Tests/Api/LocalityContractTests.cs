using Motr.Runtime;

namespace Motr.Be.Tests.Api;

/// <summary>The locality's public methods refuse misuse at the call, naming the parameter, and it keeps running.</summary>
public class LocalityContractTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    /// <summary>What the call itself throws (not its task).</summary>
    private static ArgumentNullException Thrown(Func<Task> call) =>
        Assert.IsType<ArgumentNullException>(Record.Exception(() => { _ = call(); }));

    [Fact]
    public async Task Null_delegates_are_refused_at_the_call_naming_the_parameter()
    {
        await using var loc = new Locality(0);
        // Before: each returned a task that faulted later, in the turn, with a NullReferenceException (Post queued the
        // null and the turn counted a fault).
        Assert.Equal("operation", Thrown(() => loc.RunAsync((Func<Task>)null!)).ParamName);
        Assert.Equal("operation", Thrown(() => loc.RunAsync((Func<Task<int>>)null!)).ParamName);
        Assert.Equal("action", Thrown(() => loc.RunAsync((Action)null!)).ParamName);
        Assert.Equal("func", Thrown(() => loc.RunAsync((Func<int>)null!)).ParamName);
        Assert.Equal("callback", Assert.Throws<ArgumentNullException>(() => loc.Post(null!, null)).ParamName);
        Assert.Equal("segment", Assert.Throws<ArgumentNullException>(() => loc.Attach(null!)).ParamName);
        Assert.Null(loc.Segment); // nothing half-attached
        Assert.Equal(3, await loc.RunAsync(() => 3).WaitAsync(T));
        Assert.Equal(0, loc.Faults);
    }
}

/// <summary>The caller's handlers (OnFault, OnWarning) run on the engine's threads: one that throws must not stop them.</summary>
public class HandlerFaultTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    private sealed class HandlerBug() : Exception("a handler's own bug");

    [Fact]
    public async Task A_fault_handler_that_throws_does_not_end_the_localitys_thread()
    {
        await using var loc = new Locality(0, (_, _) => throw new HandlerBug());
        // Before: the handler's exception escaped the locality's loop: an unhandled exception on its thread, which
        // ends the process.
        loc.Post(_ => throw new InvalidOperationException("a turn's fault"), null);
        Assert.Equal(5, await loc.RunAsync(() => 5).WaitAsync(T));
        Assert.Equal(1, loc.Faults);
    }

    [Fact]
    public async Task A_warning_handler_that_throws_does_not_stop_the_engine()
    {
        using var dir = new Motr.Be.Tests.TestSupport.TempDir();
        var o = Motr.Be.Tests.TestSupport.Engines.Options(dir.Path);
        int warnings = 0;
        o.OnWarning = _ => { Interlocked.Increment(ref warnings); throw new HandlerBug(); };
        await using var e = await Engine.OpenAsync(o);
        var loc = e.Localities[0];
        var seg = loc.Segment!;
        // A transaction left open across an await: the engine aborts it at the end of the turn and warns. Before: the
        // handler's exception escaped the turn's end, ending the locality's thread (and the process).
        var left = loc.RunAsync(async () =>
        {
            var tx = await seg.BeginAsync(Motr.Be.Tx.TxCredit.Region(8));
            tx.Capture<long>(Motr.Be.Tests.TestSupport.Engines.DataStart) = 1;
            await Task.Yield();
            return tx.State;
        });
        Assert.Equal(Motr.Be.Tx.TxState.Aborted, await left.WaitAsync(T));
        Assert.Equal(1, e.Domain.InvariantViolations);
        Assert.Equal(1, warnings);
        await loc.RunAsync(async () =>
        {
            using var tx = await seg.BeginAsync(Motr.Be.Tx.TxCredit.Region(8));
            tx.Capture<long>(Motr.Be.Tests.TestSupport.Engines.DataStart) = 2;
            await tx.Close();
        }).WaitAsync(T);
        Assert.Equal(2, await loc.RunAsync(() => seg.At<long>(Motr.Be.Tests.TestSupport.Engines.DataStart)).WaitAsync(T));
    }
}
