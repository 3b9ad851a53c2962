package translate

import "github.com/svcplan/svcplan/ipvs"

// ipvsOptions are the settings of ModeIPVS.
type ipvsOptions struct {
	scheduler ipvs.Scheduler
}

// WithIPVSScheduler sets the scheduler of every IPVS virtual server
// (ModeIPVS), as kube-proxy's --ipvs-scheduler does. Empty, the default,
// means [ipvs.RoundRobin]. Compile refuses a scheduler that
// [ipvs.Plan.Validate] does not know.
func WithIPVSScheduler(s ipvs.Scheduler) Option {
	return func(o *options) { o.ipvs.scheduler = s }
}
