using System.Runtime.InteropServices;

namespace Motr.Bench;

/// <summary>Quiets the machine between rows, so one row's leftovers (dirty pages being written back, garbage) do not bill the next.</summary>
internal static partial class Settle
{
    [LibraryImport("libc", EntryPoint = "sync")]
    private static partial void SyncAll();

    /// <summary>Writes back every dirty page of the machine (sync(2)), collects garbage, and pauses briefly.</summary>
    public static void BetweenRows()
    {
        if (OperatingSystem.IsLinux()) SyncAll();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Thread.Sleep(200);
    }
}
