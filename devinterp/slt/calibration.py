def calibrate(): pass
class CalibrationResult: pass
