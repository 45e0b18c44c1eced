package pglaunch

import "syscall"

// StopImmediate stops the server as `pg_ctl stop -m immediate` does: the
// postmaster and every backend quit at once, without a checkpoint, and the
// next Start runs crash recovery. Transactions in flight are lost;
// committed ones survive only if the cluster is Durable. It is for fault
// injection; like Stop it is idempotent and ends the Cluster, and a new
// Start on the same Dir and Port brings the server back.
func (c *Cluster) StopImmediate() error {
	c.stopOnce.Do(func() {
		c.signal(syscall.SIGQUIT)
		if !c.waitExit(quitTimeout) {
			_ = syscall.Kill(-c.pid, syscall.SIGKILL) // the whole group
			<-c.done
		}
		removeTempSocketDir(c.socketDir, c.tempSocket)
	})
	return c.stopErr
}
