using Motr.Be.Log;

namespace Motr.Be.Tests.Tx;

public class LogSpaceTests
{
    /// <summary>
    /// A transaction checks for failure, then waits for log space; the domain may fail in between, on another thread.
    /// No space is freed once it has failed, so a wait that starts after its waiters were released must end at once,
    /// or the writer hangs (found by DeviceFaultTests: a workload that never finished after a failed log sync).
    /// </summary>
    [Fact]
    public void A_wait_for_space_that_starts_after_the_failure_is_released_at_once()
    {
        var space = new LogSpace(64 << 10, 0);
        Assert.True(space.WaitAsync(60 << 10, null!, default).IsCompletedSuccessfully);
        var before = space.WaitAsync(8 << 10, null!, default);
        Assert.False(before.IsCompleted);
        space.FailWaiters();
        Assert.True(before.IsCompletedSuccessfully);
        var after = space.WaitAsync(8 << 10, null!, default);
        Assert.True(after.IsCompletedSuccessfully, "a wait after the failure is never released");
        // Granted as FailWaiters grants: the caller releases what it was given.
        space.Release(8 << 10);
        space.Release(8 << 10);
        space.Release(60 << 10);
        Assert.Equal(0, space.Reserved);
    }
}
