using Motr.Be.Storage;
using Motr.Be.Tests.TestSupport;
using Motr.Be.Tx;
using Motr.Runtime;

namespace Motr.Be.Tests.Api;

/// <summary>A transaction's persistence awaited off its segment's owner resumes with the awaiter, and always resumes.</summary>
public class PersistenceAwaitTests
{
    private static readonly TimeSpan T = TimeSpan.FromSeconds(30);

    /// <summary>An engine whose log writer holds its syncs at a gate, and a persistence of segment 1 not yet durable.</summary>
    private static async Task<(Engine Engine, ManualResetEventSlim Gate, TxPersistence Persisted)> HeldPersistence(int segments)
    {
        var hooks = new HookStorage(new SimStorage());
        var o = Engines.Sim(hooks.Inner, segments: segments);
        o.Storage = hooks;
        var e = await Engines.Open(o);
        var gate = new ManualResetEventSlim();
        hooks.Before = (f, op, _, _) =>
        {
            if (op == "flush" && f.Name == BeConstants.LogFileName && Thread.CurrentThread.Name == "motr-log-writer") gate.Wait(T);
        };
        var a = e.Localities[0];
        var persisted = await a.RunAsync(async () =>
        {
            using var tx = await a.Segment!.BeginAsync(TxCredit.Region(8));
            tx.Capture<long>(Engines.DataStart) = 42;
            tx.Force();
            return tx.Close();
        }).WaitAsync(T);
        return (e, gate, persisted);
    }

    [Fact]
    public async Task Awaited_on_another_locality_it_resumes_on_that_locality_not_on_the_segments_owner()
    {
        var (e, gate, persisted) = await HeldPersistence(segments: 2);
        var b = e.Localities[1];
        var resumedOnB = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        // What an async operation on locality b does at `await persisted` (the builder calls UnsafeOnCompleted).
        await b.RunAsync(() =>
        {
            var awaiter = persisted.GetAwaiter();
            Assert.False(awaiter.IsCompleted); // held at the gate
            awaiter.UnsafeOnCompleted(() =>
            {
                awaiter.GetResult();
                resumedOnB.SetResult(b.IsOwnerThread);
            });
        }).WaitAsync(T);
        gate.Set();
        // Before: the continuation ran on locality 0's thread (the segment's owner), so the rest of b's operation ran
        // outside b, racing it, with b's segment refusing it.
        Assert.True(await resumedOnB.Task.WaitAsync(T));
        await e.DisposeAsync();
    }

    [Fact]
    public async Task Awaited_off_any_locality_it_resumes_even_once_the_owner_has_stopped()
    {
        var (e, gate, persisted) = await HeldPersistence(segments: 1);
        await e.Localities[0].DisposeAsync(); // the owner stops while the group is in the writer's sync
        var resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var awaiter = persisted.GetAwaiter();
        Assert.False(awaiter.IsCompleted);
        awaiter.OnCompleted(() =>
        {
            try
            {
                awaiter.GetResult();
                resumed.SetResult();
            }
            catch (Exception x) { resumed.SetException(x); }
        });
        gate.Set();
        // Before: the continuation was posted to the stopped owner and dropped: the await never resumed.
        await resumed.Task.WaitAsync(T);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => e.DisposeAsync().AsTask().WaitAsync(T)); // its flush finds the locality stopped
    }
}
