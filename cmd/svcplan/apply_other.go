//go:build !linux

package main

import "errors"

func canApply() error {
	return errors.New("applying rules needs Linux; use 'svcplan plan' for a dry run")
}
